//! Getting image bytes: one keep-alive HTTP client per sandbox, per-attempt timeouts, bounded
//! retries with jittered exponential back-off, a body-size cap enforced while streaming, and
//! `file://` reads for local imagery. It does not decode; it only says which bytes arrived.
//! Byte ranges (GeoTIFF tiles) go the same way, with a `Range` header.

use std::ops::Range;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RANGE, RETRY_AFTER};
use tokio::time::Instant;

use crate::error::{BuildingError, ErrorCode};

/// The longest `Retry-After` we honour: a server asking for more gets this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);
const BASE_BACKOFF: Duration = Duration::from_millis(100);

/// Fetch settings (from `Config`).
#[derive(Clone)]
pub struct FetchSettings {
    pub timeout: Duration,
    pub retries: u32,
    pub max_bytes: usize,
    /// `TILE_HEADERS`: sent with every imagery request, never logged (values may be keys).
    pub headers: Vec<(String, String)>,
    pub max_connections: usize,
}

/// Shows header names only: a settings dump must not leak an API key.
impl std::fmt::Debug for FetchSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("FetchSettings")
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("max_bytes", &self.max_bytes)
            .field("headers", &names)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// Downloads images; cheap to share (`reqwest::Client` is an `Arc` inside).
pub struct Fetcher {
    client: reqwest::Client,
    settings: FetchSettings,
}

/// Whether an attempt may be repeated.
enum Attempt {
    Retry(BuildingError, Option<Duration>),
    Fail(BuildingError),
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        for (name, value) in &settings.headers {
            // Validated by Config; a failure here would be a bug, so skip rather than panic.
            if let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                v.set_sensitive(true);
                headers.insert(n, v);
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("tilepredict/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .pool_max_idle_per_host(settings.max_connections)
            .pool_idle_timeout(Duration::from_secs(50))
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { client, settings })
    }

    /// The bytes at `url`, or why not. No attempt starts at or after `cutoff`, and no attempt
    /// runs past it.
    pub async fn fetch(&self, url: &str, cutoff: Instant) -> Result<Bytes, BuildingError> {
        if let Some(path) = url.strip_prefix("file://") {
            return self.read_file(path).await;
        }
        self.fetch_http(url, None, cutoff).await
    }

    /// Bytes `range` of the file at `url` (an HTTP Range request, or a read of a local file),
    /// with the same retries, timeouts and cap as [`Fetcher::fetch`]. A server that ignores
    /// `Range` (answering 200 with the whole file) is an error, not a silent full download.
    pub async fn fetch_range(
        &self,
        url: &str,
        range: Range<u64>,
        cutoff: Instant,
    ) -> Result<Bytes, BuildingError> {
        if range.end - range.start > self.settings.max_bytes as u64 {
            return Err(too_large(&redact(url), self.settings.max_bytes));
        }
        if let Some(path) = url.strip_prefix("file://") {
            return read_file_range(path, range).await;
        }
        self.fetch_http(url, Some(range), cutoff).await
    }

    async fn fetch_http(
        &self,
        url: &str,
        range: Option<Range<u64>>,
        cutoff: Instant,
    ) -> Result<Bytes, BuildingError> {
        let mut attempt = 0;
        loop {
            let now = Instant::now();
            if now >= cutoff {
                return Err(BuildingError::deadline_exceeded());
            }
            let budget = self.settings.timeout.min(cutoff - now);
            let request = self.attempt(url, range.clone());
            let outcome = match tokio::time::timeout(budget, request).await {
                Ok(Ok(bytes)) => return Ok(bytes),
                Ok(Err(outcome)) => outcome,
                Err(_) if budget < self.settings.timeout => {
                    return Err(BuildingError::deadline_exceeded());
                }
                Err(_) => Attempt::Retry(
                    BuildingError::new(
                        ErrorCode::ImageUnavailable,
                        format!(
                            "{}: no complete answer within {} ms",
                            redact(url),
                            budget.as_millis()
                        ),
                    ),
                    None,
                ),
            };
            match outcome {
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry(error, _) if attempt >= self.settings.retries => {
                    return Err(BuildingError::new(
                        error.code,
                        format!("{} (after {} attempts)", error.message, attempt + 1),
                    ));
                }
                Attempt::Retry(_, retry_after) => {
                    let wait = retry_after.unwrap_or_else(|| backoff(attempt));
                    if Instant::now() + wait >= cutoff {
                        return Err(BuildingError::deadline_exceeded());
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    async fn attempt(&self, url: &str, range: Option<Range<u64>>) -> Result<Bytes, Attempt> {
        let shown = redact(url);
        let mut request = self.client.get(url);
        if let Some(r) = &range {
            request = request.header(RANGE, format!("bytes={}-{}", r.start, r.end - 1));
        }
        let response = request.send().await.map_err(|e| {
            let error = BuildingError::new(
                ErrorCode::ImageUnavailable,
                format!("{shown}: {}", describe(&e)),
            );
            Attempt::Retry(error, None)
        })?;
        let status = response.status();
        if !status.is_success() {
            let message = format!("{shown}: HTTP {status}");
            let error = BuildingError::new(ErrorCode::ImageUnavailable, message);
            return Err(
                if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                    Attempt::Retry(error, retry_after(response.headers()))
                } else {
                    Attempt::Fail(error)
                },
            );
        }
        if range.is_some() && status != StatusCode::PARTIAL_CONTENT {
            return Err(Attempt::Fail(BuildingError::new(
                ErrorCode::ImageUnavailable,
                format!(
                    "{shown}: the server ignores Range requests (HTTP {status} instead of 206): \
                     serve the file from S3 or a server that supports ranges"
                ),
            )));
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        // (A ranged answer, 206, is a file's bytes, whatever type the server labels them.)
        if range.is_none() && is_not_an_image(&content_type) {
            return Err(Attempt::Fail(BuildingError::new(
                ErrorCode::ImageInvalid,
                format!("{shown}: the server answered {content_type:?} instead of an image"),
            )));
        }
        let max = self.settings.max_bytes;
        if response
            .content_length()
            .is_some_and(|len| len as usize > max)
        {
            return Err(Attempt::Fail(too_large(&shown, max)));
        }
        let mut body = BytesMut::with_capacity(
            response
                .content_length()
                .unwrap_or(32 * 1024)
                .min(max as u64) as usize,
        );
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let error = BuildingError::new(
                    ErrorCode::ImageUnavailable,
                    format!("{shown}: body cut off: {}", describe(&e)),
                );
                Attempt::Retry(error, None)
            })?;
            if body.len() + chunk.len() > max {
                return Err(Attempt::Fail(too_large(&shown, max)));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    async fn read_file(&self, path: &str) -> Result<Bytes, BuildingError> {
        let unavailable = |e: std::io::Error| {
            BuildingError::new(ErrorCode::ImageUnavailable, format!("file://{path}: {e}"))
        };
        let meta = tokio::fs::metadata(path).await.map_err(unavailable)?;
        if meta.len() as usize > self.settings.max_bytes {
            return Err(too_large(
                &format!("file://{path}"),
                self.settings.max_bytes,
            ));
        }
        tokio::fs::read(path)
            .await
            .map(Bytes::from)
            .map_err(unavailable)
    }
}

async fn read_file_range(path: &str, range: Range<u64>) -> Result<Bytes, BuildingError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let unavailable = |e: std::io::Error| {
        BuildingError::new(
            ErrorCode::ImageUnavailable,
            format!("file://{path} bytes {}-{}: {e}", range.start, range.end - 1),
        )
    };
    let mut file = tokio::fs::File::open(path).await.map_err(|e| {
        BuildingError::new(ErrorCode::ImageUnavailable, format!("file://{path}: {e}"))
    })?;
    file.seek(std::io::SeekFrom::Start(range.start))
        .await
        .map_err(unavailable)?;
    let mut bytes = Vec::with_capacity((range.end - range.start) as usize);
    file.take(range.end - range.start)
        .read_to_end(&mut bytes)
        .await
        .map_err(unavailable)?;
    Ok(Bytes::from(bytes))
}

fn too_large(shown: &str, max: usize) -> BuildingError {
    BuildingError::new(
        ErrorCode::ImageInvalid,
        format!("{shown}: image larger than {max} bytes (MAX_IMAGE_BYTES)"),
    )
}

/// Text, JSON, XML and HTML bodies are error pages (WMS exceptions are XML), never imagery.
pub fn is_not_an_image(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("json")
        || content_type.contains("xml")
        || content_type.contains("html")
}

/// Full-jitter exponential back-off: uniformly in [d/2, d) with d = 100 ms · 2^attempt.
pub fn backoff(attempt: u32) -> Duration {
    let full = BASE_BACKOFF.saturating_mul(1 << attempt.min(6));
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// `Retry-After` in seconds, capped; HTTP-date forms fall back to our own back-off.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut message = if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = e.source();
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    message
}

/// URLs shown in errors and logs lose their query string: signed URLs and API keys live there.
pub fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?…"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_pages_are_recognised_by_content_type() {
        for ct in [
            "text/html; charset=utf-8",
            "application/json",
            "application/vnd.ogc.se_xml",
            "text/plain",
        ] {
            assert!(is_not_an_image(ct), "{ct}");
        }
        for ct in ["image/png", "image/jpeg", "application/octet-stream", ""] {
            assert!(!is_not_an_image(ct), "{ct}");
        }
    }

    #[test]
    fn backoff_grows_and_stays_jittered_in_range() {
        for attempt in 0..4 {
            let full = BASE_BACKOFF * (1 << attempt);
            for _ in 0..50 {
                let d = backoff(attempt);
                assert!(d >= full / 2 && d < full, "{attempt}: {d:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_capped_and_dates_are_ignored() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn settings_debug_shows_header_names_not_values() {
        let settings = FetchSettings {
            timeout: Duration::from_secs(1),
            retries: 0,
            max_bytes: 1024,
            headers: vec![("X-Api-Key".into(), "s3cret-value".into())],
            max_connections: 1,
        };
        let shown = format!("{settings:?}");
        assert!(
            shown.contains("X-Api-Key") && !shown.contains("s3cret-value"),
            "{shown}"
        );
    }

    #[test]
    fn query_strings_never_reach_messages() {
        assert_eq!(
            redact("https://t/1/2/3.png?key=SECRET"),
            "https://t/1/2/3.png?…"
        );
        assert_eq!(redact("https://t/1/2/3.png"), "https://t/1/2/3.png");
    }
}
