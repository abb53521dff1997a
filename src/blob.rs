//! Whole files read at init ("blobs"): from S3 (any S3-compatible endpoint) or a local file.
//! Used for the model, the registry and a GeoTIFF mosaic's index, once per sandbox; it knows
//! nothing of what the bytes mean. (Imagery is not read here: that is `imagery`'s business,
//! though its GeoTIFF reads use this module's S3 client.)
//!
//! Lambda gives init 10 s. A dead or hanging S3 endpoint must end in an init error that names
//! the bucket, key and cause well before that, not in Lambda killing a silent process: each S3
//! attempt gets 1 s to connect and 2 s to answer with headers, three attempts in all with short
//! jittered back-off (≈ 7 s at worst), and the whole load (headers and body) is cut at
//! `MODEL_LOAD_TIMEOUT_MS`.

use std::path::PathBuf;
use std::time::Duration;

use aws_config::{BehaviorVersion, retry::RetryConfig, timeout::TimeoutConfig};
use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};

use crate::error::ConfigError;

/// Where a file read at init lives: the ONNX model (`MODEL_URI`), the registry (`REGISTRY_URI`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobUri {
    S3 { bucket: String, key: String },
    File(PathBuf),
}

impl BlobUri {
    /// `s3://bucket/key`, `file:///abs/path`, or a plain path; errors name the variable `name`.
    pub fn parse(name: &'static str, raw: &str) -> Result<Self, ConfigError> {
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() {
                return Err(ConfigError::new(
                    name,
                    raw,
                    "an S3 URI needs a bucket and a key: s3://bucket/path/file",
                ));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                key: key.to_string(),
            });
        }
        let path = raw.strip_prefix("file://").unwrap_or(raw);
        if path.is_empty() || raw.contains("://") && !raw.starts_with("file://") {
            return Err(ConfigError::new(
                name,
                raw,
                "expected s3://bucket/key, file:///path or a local path",
            ));
        }
        Ok(Self::File(PathBuf::from(path)))
    }
}

impl std::fmt::Display for BlobUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            // `file://` makes a URL only of an absolute path; a relative one prints as given.
            Self::File(path) if path.is_absolute() => write!(f, "file://{}", path.display()),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A file's content and a version string (the S3 ETag, or size and mtime for a file).
pub struct Blob {
    pub bytes: Bytes,
    pub version: String,
}

/// `MODEL_LOAD_TIMEOUT_MS`'s default: leaves ONNX Runtime ≈ 2 s of Lambda's 10 s init to build
/// the session.
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(8);
/// S3 attempts per load (the first and two retries).
const S3_ATTEMPTS: u32 = 3;
const S3_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// From request sent to response headers; the body is bounded by the whole-load timeout (and
/// the SDK's stalled-stream protection).
const S3_READ_TIMEOUT: Duration = Duration::from_secs(2);
const S3_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const S3_INITIAL_BACKOFF: Duration = Duration::from_millis(200);
/// Objects larger than one part are read as ranged GETs, `PARTS_IN_FLIGHT` at a time: S3 serves
/// one request at roughly 85–90 MB/s (AWS's S3 performance guidelines), so a large model in one
/// GET spends most of the init phase downloading. The part size and fan-out were chosen by
/// measurement (docs/PERFORMANCE.md, "Model download: 4 MiB parts, 8 in flight"). The first
/// part also tells the object's size. Each part is an attempt of its own, with the same
/// timeouts and retries as a whole-object GET.
const PART_BYTES: u64 = 4 * 1024 * 1024;
const PARTS_IN_FLIGHT: usize = 8;

/// Reads the file at `uri`, giving up after `timeout`; the error names `what` ("model",
/// "registry"), the bucket/key or path, and the cause.
pub async fn load(uri: &BlobUri, what: &str, timeout: Duration) -> Result<Blob, String> {
    match tokio::time::timeout(timeout, load_unbounded(uri, what)).await {
        Ok(loaded) => loaded,
        Err(_) => Err(format!(
            "cannot load {what} {uri}: not loaded within {} ms (MODEL_LOAD_TIMEOUT_MS): the source \
             is unreachable or too slow",
            timeout.as_millis()
        )),
    }
}

async fn load_unbounded(uri: &BlobUri, what: &str) -> Result<Blob, String> {
    match uri {
        BlobUri::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
            let meta = tokio::fs::metadata(path).await.ok();
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Ok(Blob {
                version: format!("{}-{mtime}", bytes.len()),
                bytes: Bytes::from(bytes),
            })
        }
        BlobUri::S3 { bucket, key } => load_s3(bucket, key, what).await,
    }
}

/// A custom endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`) usually means an
/// S3-compatible server (MinIO, a test server) that wants path-style addressing.
fn custom_endpoint() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

async fn load_s3(bucket: &str, key: &str, what: &str) -> Result<Blob, String> {
    let client = s3_client().await;
    let fail = |why: String| format!("cannot load {what} s3://{bucket}/{key}: {why}");
    let first = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes=0-{}", PART_BYTES - 1))
        .send()
        .await;
    let first = match first {
        Ok(first) => first,
        // An empty object has no byte 0: read it whole, so the caller sees "0 bytes".
        Err(e) if e.as_service_error().and_then(|s| s.meta().code()) == Some("InvalidRange") => {
            return load_whole(&client, bucket, key).await.map_err(fail);
        }
        Err(e) => return Err(fail(describe(&e))),
    };
    let etag = first.e_tag().unwrap_or("").to_string();
    // A server that ignores `Range` answers the whole object, with no Content-Range.
    let total = first.content_range().and_then(content_range_total);
    let head = collect(first.body).await.map_err(fail)?;
    let version = etag.trim_matches('"').to_string();
    let Some(total) = total.filter(|&t| t > head.len() as u64) else {
        return Ok(Blob {
            bytes: head,
            version,
        });
    };
    // The futures are made up front: a stream of a borrowing closure is not `Send` enough
    // for a spawned task (the registry loads on one).
    let parts: Vec<_> = part_ranges(head.len() as u64, total, PART_BYTES)
        .into_iter()
        .map(|range| get_part(&client, bucket, key, range, &etag))
        .collect();
    let fetched: Vec<Bytes> = futures_util::stream::iter(parts)
        .buffered(PARTS_IN_FLIGHT)
        .try_collect()
        .await
        .map_err(fail)?;
    let mut bytes = BytesMut::with_capacity(total as usize);
    bytes.extend_from_slice(&head);
    for part in fetched {
        bytes.extend_from_slice(&part);
    }
    Ok(Blob {
        bytes: bytes.freeze(),
        version,
    })
}

/// One S3 client per process, built on first use: building one reads the environment and
/// credentials provider chain, which is not free, and the model, the registry and GeoTIFF
/// imagery all read through it (one connection pool, one set of credentials).
pub async fn s3_client() -> aws_sdk_s3::Client {
    static CLIENT: tokio::sync::OnceCell<aws_sdk_s3::Client> = tokio::sync::OnceCell::const_new();
    CLIENT
        .get_or_init(|| async {
            let shared = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(S3_ATTEMPTS)
                        .with_initial_backoff(S3_INITIAL_BACKOFF),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(S3_CONNECT_TIMEOUT)
                        .read_timeout(S3_READ_TIMEOUT)
                        .operation_attempt_timeout(S3_ATTEMPT_TIMEOUT)
                        .build(),
                )
                .load()
                .await;
            let config = aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(custom_endpoint())
                .build();
            aws_sdk_s3::Client::from_conf(config)
        })
        .await
        .clone()
}

async fn load_whole(client: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Blob, String> {
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let version = object.e_tag().unwrap_or("").trim_matches('"').to_string();
    let bytes = collect(object.body).await?;
    Ok(Blob { bytes, version })
}

/// One part, `If-Match` the first part's ETag: an object replaced mid-load fails the load
/// (412) instead of splicing two versions into one model.
async fn get_part(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    (first, last): (u64, u64),
    etag: &str,
) -> Result<Bytes, String> {
    let mut request = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={first}-{last}"));
    if !etag.is_empty() {
        request = request.if_match(etag);
    }
    let part = request.send().await.map_err(|e| {
        format!(
            "bytes {first}-{last} (the object may have changed during the load): {}",
            describe(&e)
        )
    })?;
    let bytes = collect(part.body).await?;
    let expected = last - first + 1;
    if bytes.len() as u64 != expected {
        return Err(format!(
            "bytes {first}-{last}: got {} bytes, expected {expected}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

async fn collect(body: aws_sdk_s3::primitives::ByteStream) -> Result<Bytes, String> {
    body.collect()
        .await
        .map(|data| data.into_bytes())
        .map_err(|e| format!("body cut off: {e}"))
}

/// The object size from a `Content-Range: bytes 0-4194303/44694845` header.
fn content_range_total(header: &str) -> Option<u64> {
    let (unit, rest) = header.trim().split_once(' ')?;
    if unit != "bytes" {
        return None;
    }
    rest.rsplit_once('/')?.1.trim().parse().ok()
}

/// Inclusive byte ranges covering `start..total` in parts of at most `part` bytes.
fn part_ranges(start: u64, total: u64, part: u64) -> Vec<(u64, u64)> {
    (start..total)
        .step_by(part.max(1) as usize)
        .map(|first| (first, (first + part).min(total) - 1))
        .collect()
}

/// The SDK's `Display` is terse ("service error"); walk the sources for the real cause.
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uri_prints_as_a_user_would_write_it() {
        let shown = |raw: &str| BlobUri::parse("MODEL_URI", raw).unwrap().to_string();
        assert_eq!(shown("s3://b/models/roof.onnx"), "s3://b/models/roof.onnx");
        assert_eq!(shown("file:///srv/roof.onnx"), "file:///srv/roof.onnx");
        assert_eq!(shown("/srv/roof.onnx"), "file:///srv/roof.onnx");
        // Not `file://fixtures/…`, which a URL parser reads as host `fixtures`.
        assert_eq!(
            shown("fixtures/registry/demo.csv"),
            "fixtures/registry/demo.csv"
        );
    }

    #[test]
    fn the_object_size_comes_from_content_range() {
        assert_eq!(
            content_range_total("bytes 0-8388607/44694845"),
            Some(44_694_845)
        );
        assert_eq!(content_range_total("bytes 0-9/10"), Some(10));
        assert_eq!(content_range_total("bytes 0-9/*"), None);
        assert_eq!(content_range_total("items 0-9/10"), None);
        assert_eq!(content_range_total(""), None);
    }

    #[test]
    fn parts_cover_the_rest_of_the_object_exactly_once() {
        assert_eq!(part_ranges(4, 10, 4), vec![(4, 7), (8, 9)]);
        assert_eq!(part_ranges(4, 12, 4), vec![(4, 7), (8, 11)]);
        assert_eq!(part_ranges(10, 10, 4), vec![]);
        for (start, total, part) in [(0, 1, 1), (3, 100, 7), (8, 45_000_000, 8 << 20)] {
            let ranges = part_ranges(start, total, part);
            let mut next = start;
            for (first, last) in ranges {
                assert_eq!(first, next);
                assert!(last >= first && last - first < part);
                next = last + 1;
            }
            assert_eq!(next, total);
        }
    }
}
