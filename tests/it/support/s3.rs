//! A real S3 endpoint in-process: `s3s` speaks the S3 wire protocol (SigV4 is verified, so a
//! client with wrong credentials or a broken signer fails here as it would on AWS) and `s3s-fs`
//! stores objects as plain files in a temporary directory and answers GetObject (status, ETag,
//! ranges, errors). Only the body of a found object is served differently: see [`FastBodies`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt as _;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;

use super::loopback::Loopback;

pub const ACCESS_KEY: &str = "AKIDTEST";
pub const SECRET_KEY: &str = "SECRETTEST";
pub const REGION: &str = "us-east-1";

/// An S3 server on `127.0.0.1:<ephemeral>`. It runs on its own thread with its own tokio
/// runtime, so plain `#[test]`s and `#[tokio::test]`s (of either flavour) can use it without
/// starving it. Dropping it stops the server and deletes the stored objects.
pub struct S3Server {
    /// First, so the server stops before the objects' directory goes.
    server: Loopback,
    root: tempfile::TempDir,
    requests: Arc<AtomicUsize>,
    reads: Reads,
}

impl S3Server {
    pub fn start() -> S3Server {
        Self::start_with_stream_rate(None)
    }

    /// Like [`S3Server::start`], with every response body paced to at most `bytes_per_s`:
    /// S3 gives one request about 85–90 MB/s ("make one concurrent request for each 85–90
    /// MB/s of desired throughput", AWS's S3 performance guidelines), far less than loopback,
    /// so the benchmark paces its model downloads as S3 would.
    pub fn start_with_stream_rate(bytes_per_s: Option<f64>) -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for S3 objects");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let reads = Reads::default();
        let fs = FastBodies {
            fs,
            root: root.path().to_path_buf(),
            bytes_per_s,
            reads: Arc::clone(&reads),
        };
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        // Counting in a `service_fn` wrapper counts HTTP requests, not connections (the SDK
        // keeps connections alive).
        let svc = hyper::service::service_fn(move |req| {
            counter.fetch_add(1, Ordering::SeqCst);
            hyper::service::Service::call(&service, req)
        });
        let server = Loopback::start("S3 server", move || svc.clone());
        S3Server {
            server,
            root,
            requests,
            reads,
        }
    }

    /// Stores an object by writing the file s3s-fs would serve (bucket = directory under the
    /// root, key = path below it, `/` makes subdirectories) and its ETag sidecar, as a PutObject
    /// would: the MD5 of the bytes. Without the sidecar s3s-fs hashes the whole file on every
    /// GET, ranged ones included (six parts of a 45 MB model = 270 MB hashed), which would make
    /// the server, not the code under test, the slow part. Writing directly does not count as
    /// a request, so `request_count` reflects only what the code under test did.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.object_path(bucket, key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        // A previous PutObject through the protocol may have left metadata that would now be
        // stale.
        let _ = std::fs::remove_file(self.root.path().join(sidecar(bucket, key, "metadata.json")));
        std::fs::write(
            self.root.path().join(sidecar(bucket, key, "internal.json")),
            serde_json::json!({ "e_tag": e_tag(bytes) }).to_string(),
        )
        .unwrap();
    }

    /// Creates an empty bucket (a directory), for ListObjects/HeadBucket to succeed.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Environment for a child process using `aws-config`: endpoint and static credentials, and
    /// no IMDS or profile files, which would otherwise be probed (and could be slow or pick up
    /// the developer's real credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        let nowhere = self.root.path().join("no-such-aws-config");
        let nowhere = nowhere.to_string_lossy().into_owned();
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", nowhere.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Every GetObject answered so far: `bucket/key` and the bytes served (`start..end`).
    pub fn reads(&self) -> Vec<(String, std::ops::Range<u64>)> {
        self.reads.lock().unwrap().clone()
    }

    /// HTTP requests served so far (all operations, including failed/unauthorised ones).
    pub fn request_count(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        assert!(
            !bucket.is_empty() && !bucket.contains('/'),
            "bad bucket {bucket:?}"
        );
        assert!(
            !key.is_empty() && !key.split('/').any(|p| p == ".."),
            "bad key {key:?}"
        );
        self.root.path().join(bucket).join(key)
    }
}

/// The ETag S3 gives an object uploaded in one PutObject: the hex MD5 of its bytes.
pub fn e_tag(bytes: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GetObjects served: `bucket/key` and the byte range.
type Reads = Arc<Mutex<Vec<(String, std::ops::Range<u64>)>>>;

/// Body blocks: 1 MiB.
const BLOCK: usize = 1 << 20;

/// s3s-fs with GetObject's body read in 1 MiB blocks. s3s-fs streams a body in 4 KiB reads,
/// each a round trip through tokio's blocking pool, which made the model load measure the test
/// server rather than the function (docs/PERFORMANCE.md, "The benchmark's loopback S3 server").
/// Everything but the bytes (status, headers, ranges, errors) is still s3s-fs's answer.
struct FastBodies {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    /// Pace each body to this rate (see [`S3Server::start_with_stream_rate`]).
    bytes_per_s: Option<f64>,
    reads: Reads,
}

#[async_trait::async_trait]
impl s3s::S3 for FastBodies {
    async fn get_object(
        &self,
        req: s3s::S3Request<s3s::dto::GetObjectInput>,
    ) -> s3s::S3Result<s3s::S3Response<s3s::dto::GetObjectOutput>> {
        let path = self.root.join(&req.input.bucket).join(&req.input.key);
        let object = format!("{}/{}", req.input.bucket, req.input.key);
        let mut answer = self.fs.get_object(req).await?;
        let output = &mut answer.output;
        let length = output.content_length.unwrap_or(0).max(0) as u64;
        // s3s-fs has resolved the range (and refused a bad one): start from its Content-Range.
        let start = output
            .content_range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes ")?.split('-').next()?.parse().ok())
            .unwrap_or(0u64);
        self.reads
            .lock()
            .unwrap()
            .push((object, start..start + length));
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek, SeekFrom};
            let mut file = std::fs::File::open(path)?;
            file.seek(SeekFrom::Start(start))?;
            let mut bytes = vec![0; length as usize];
            file.read_exact(&mut bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| s3s::s3_error!(InternalError, "{e}"))?
        .map_err(|e| s3s::s3_error!(InternalError, "{e}"))?;
        let bytes = bytes::Bytes::from(bytes);
        let blocks: Vec<bytes::Bytes> = (0..bytes.len())
            .step_by(BLOCK)
            .map(|at| bytes.slice(at..(at + BLOCK).min(bytes.len())))
            .collect();
        let rate = self.bytes_per_s;
        let started = tokio::time::Instant::now();
        let mut sent = 0usize;
        let paced = futures_util::stream::iter(blocks).then(move |block| {
            // Block n leaves no earlier than the rate allows for the bytes before it.
            let due = rate.map(|r| started + std::time::Duration::from_secs_f64(sent as f64 / r));
            sent += block.len();
            async move {
                if let Some(due) = due {
                    tokio::time::sleep_until(due).await;
                }
                Ok::<_, std::io::Error>(block)
            }
        });
        output.body = Some(s3s::dto::StreamingBlob::wrap(paced));
        Ok(answer)
    }
}

/// Name of the per-object sidecar s3s-fs keeps in the root (see `FileSystem::get_metadata_path`).
fn sidecar(bucket: &str, key: &str, suffix: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(".bucket-{}.object-{}.{suffix}", enc(bucket), enc(key))
}
