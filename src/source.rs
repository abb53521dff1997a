//! Getting a file's bytes at init: from S3 (any S3-compatible endpoint) or a local file. Used
//! for the model and for the registry, once per sandbox; it knows nothing of what the bytes
//! mean.

use std::time::Duration;

use aws_config::{BehaviorVersion, retry::RetryConfig, timeout::TimeoutConfig};
use bytes::Bytes;

use crate::config::SourceUri;

/// A file's content and a version string (the S3 ETag, or size and mtime for a file).
pub struct SourceBytes {
    pub bytes: Bytes,
    pub version: String,
}

/// Reads the file at `uri`; the error names `what` ("model", "registry"), the bucket/key or
/// path, and the cause.
pub async fn load(uri: &SourceUri, what: &str) -> Result<SourceBytes, String> {
    match uri {
        SourceUri::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
            let meta = tokio::fs::metadata(path).await.ok();
            let mtime = meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            Ok(SourceBytes {
                version: format!("{}-{mtime}", bytes.len()),
                bytes: Bytes::from(bytes),
            })
        }
        SourceUri::S3 { bucket, key } => load_s3(bucket, key, what).await,
    }
}

/// A custom endpoint (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`) usually means an
/// S3-compatible server (MinIO, a test server) that wants path-style addressing.
fn custom_endpoint() -> bool {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

async fn load_s3(bucket: &str, key: &str, what: &str) -> Result<SourceBytes, String> {
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(20))
                .build(),
        )
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(custom_endpoint())
        .build();
    let client = aws_sdk_s3::Client::from_conf(config);
    let fail = |why: String| format!("cannot load {what} s3://{bucket}/{key}: {why}");
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(describe(&e)))?;
    let version = object.e_tag().unwrap_or("").trim_matches('"').to_string();
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| fail(format!("body cut off: {e}")))?
        .into_bytes();
    Ok(SourceBytes { bytes, version })
}

/// The SDK's `Display` is terse ("service error"); walk the sources for the real cause.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
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
