//! Byte ranges of a GeoTIFF: S3 ranged GETs through the function's one S3 client (its
//! credentials, region and endpoint), HTTP Range requests through the imagery fetcher (its
//! retries, timeouts and body cap), or reads of a local file. Every request is counted, so an
//! answer can say what a request cost.
//!
//! [`HeaderFetch`] serves async-tiff's header parser: it reads the first [`HEADER_PREFETCH`]
//! bytes in one request (a cloud-optimized GeoTIFF keeps every image directory there) and
//! reads further only for what lies beyond, up to [`MAX_HEADER_BYTES`] in all: a file whose
//! directories sit at its end (not cloud-optimized) costs a few more requests, and a hostile
//! one cannot make us download gigabytes of "header".

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_tiff::error::{AsyncTiffError, AsyncTiffResult};
use async_tiff::metadata::MetadataFetch;
use bytes::{Bytes, BytesMut};
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Location;
use crate::error::{BuildingError, ErrorCode};
use crate::imagery::fetch::Fetcher;

/// The first read of a file: a COG's header and directories fit in far less.
pub const HEADER_PREFETCH: u64 = 64 * 1024;
/// Header bytes we read at most before giving up on a file.
pub const MAX_HEADER_BYTES: u64 = 8 * 1024 * 1024;
/// Later header reads fetch at least this much (directories are read a few bytes at a time).
const HEADER_STEP: u64 = 64 * 1024;

/// Requests and bytes, counted as they happen (shared by one sandbox or one request).
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicUsize,
    pub bytes: AtomicU64,
}

impl Counters {
    fn add(&self, bytes: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Reads byte ranges of files; one per sandbox.
pub struct RangeReader {
    fetcher: Arc<Fetcher>,
}

impl RangeReader {
    pub fn new(fetcher: Arc<Fetcher>) -> Self {
        Self { fetcher }
    }

    /// Bytes `range` of the file at `location`, or why not. A range past the file's end
    /// answers fewer bytes (S3 and files) or an error; callers check the length.
    pub async fn read(
        &self,
        location: &Location,
        range: Range<u64>,
        cutoff: Instant,
        counters: &Counters,
    ) -> Result<Bytes, BuildingError> {
        let bytes = match location {
            Location::Http(url) => self.fetcher.fetch_range(url, range.clone(), cutoff).await?,
            Location::File(path) => {
                let url = format!("file://{}", path.display());
                self.fetcher
                    .fetch_range(&url, range.clone(), cutoff)
                    .await?
            }
            Location::S3 { bucket, key } => read_s3(bucket, key, range.clone(), cutoff).await?,
        };
        counters.add(bytes.len());
        Ok(bytes)
    }
}

async fn read_s3(
    bucket: &str,
    key: &str,
    range: Range<u64>,
    cutoff: Instant,
) -> Result<Bytes, BuildingError> {
    let shown = || {
        format!(
            "s3://{bucket}/{key} bytes {}-{}",
            range.start,
            range.end - 1
        )
    };
    let client = crate::blob::s3_client().await;
    let request = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .range(format!("bytes={}-{}", range.start, range.end - 1))
        // Requester-pays buckets (NAIP's) refuse GETs without it; other buckets ignore it.
        .request_payer(aws_sdk_s3::types::RequestPayer::Requester)
        .send();
    let work = async {
        let object = request.await.map_err(|e| {
            let code = e.as_service_error().and_then(|s| s.meta().code());
            // A range starting past the end: the file is shorter than its directory says.
            let code = if code == Some("InvalidRange") {
                ErrorCode::ImageInvalid
            } else {
                ErrorCode::ImageUnavailable
            };
            BuildingError::new(code, format!("{}: {}", shown(), crate::blob::describe(&e)))
        })?;
        object
            .body
            .collect()
            .await
            .map(|data| data.into_bytes())
            .map_err(|e| {
                BuildingError::new(
                    ErrorCode::ImageUnavailable,
                    format!("{}: body cut off: {e}", shown()),
                )
            })
    };
    match tokio::time::timeout_at(cutoff, work).await {
        Ok(result) => result,
        Err(_) => Err(BuildingError::deadline_exceeded()),
    }
}

/// async-tiff's view of one file's header: bytes from the start, fetched in few requests.
#[derive(Debug)]
pub struct HeaderFetch {
    pub reader: Arc<RangeReader>,
    pub location: Location,
    pub cutoff: Instant,
    pub counters: Arc<Counters>,
    /// Bytes `0..len` of the file as read so far; `eof` once the file ended inside them.
    state: Mutex<(BytesMut, bool)>,
}

impl std::fmt::Debug for RangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RangeReader")
    }
}

impl HeaderFetch {
    pub fn new(
        reader: Arc<RangeReader>,
        location: Location,
        cutoff: Instant,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            reader,
            location,
            cutoff,
            counters,
            state: Mutex::new((BytesMut::new(), false)),
        }
    }

    /// How many bytes of the file were read.
    pub async fn bytes_read(&self) -> u64 {
        self.state.lock().await.0.len() as u64
    }

    /// The bytes read so far (the first read tells a TIFF from anything else).
    pub async fn prefix(&self, len: u64) -> Result<Bytes, BuildingError> {
        self.fetch_bytes(0..len).await
    }

    async fn fetch_bytes(&self, range: Range<u64>) -> Result<Bytes, BuildingError> {
        let mut state = self.state.lock().await;
        let (buffer, eof) = &mut *state;
        if range.end > MAX_HEADER_BYTES {
            return Err(BuildingError::new(
                ErrorCode::ImageInvalid,
                format!(
                    "{}: its image directories reach past the first {} MiB (not a cloud-optimized \
                     GeoTIFF, or a damaged one): convert it with `gdal_translate -of COG` or \
                     `rio cogeo create`",
                    self.location,
                    MAX_HEADER_BYTES >> 20
                ),
            ));
        }
        while (buffer.len() as u64) < range.end && !*eof {
            let start = buffer.len() as u64;
            let want = if start == 0 {
                HEADER_PREFETCH
            } else {
                HEADER_STEP.max(range.end - start)
            };
            let end = (start + want).min(MAX_HEADER_BYTES);
            let bytes = self
                .reader
                .read(&self.location, start..end, self.cutoff, &self.counters)
                .await?;
            *eof = (bytes.len() as u64) < end - start;
            buffer.extend_from_slice(&bytes);
        }
        let len = buffer.len() as u64;
        let (start, end) = (range.start.min(len), range.end.min(len));
        Ok(Bytes::copy_from_slice(
            &buffer[start as usize..end as usize],
        ))
    }
}

#[async_trait::async_trait]
impl MetadataFetch for HeaderFetch {
    async fn fetch(&self, range: Range<u64>) -> AsyncTiffResult<Bytes> {
        let wanted = range.end - range.start;
        let bytes = self
            .fetch_bytes(range)
            .await
            .map_err(|e| AsyncTiffError::General(e.message))?;
        if (bytes.len() as u64) < wanted {
            return Err(AsyncTiffError::EndOfFile(wanted, bytes.len() as u64));
        }
        Ok(bytes)
    }
}
