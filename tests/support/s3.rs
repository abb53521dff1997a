//! A real S3 endpoint in-process: `s3s` speaks the S3 wire protocol (SigV4 is verified, so a
//! client with wrong credentials or a broken signer fails here as it would on AWS) and `s3s-fs`
//! stores objects as plain files in a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::sync::oneshot;

#[allow(dead_code)]
pub const ACCESS_KEY: &str = "AKIDTEST";
#[allow(dead_code)]
pub const SECRET_KEY: &str = "SECRETTEST";
#[allow(dead_code)]
pub const REGION: &str = "us-east-1";

/// An S3 server on `127.0.0.1:<ephemeral>`. It runs on its own thread with its own tokio
/// runtime, so plain `#[test]`s and `#[tokio::test]`s (of either flavour) can use it without
/// starving it. Dropping it stops the server and deletes the stored objects.
#[allow(dead_code)]
pub struct S3Server {
    addr: SocketAddr,
    root: tempfile::TempDir,
    requests: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[allow(dead_code)]
impl S3Server {
    pub fn start() -> S3Server {
        let root = tempfile::tempdir().expect("temp dir for S3 objects");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs root");
        let service = {
            let mut b = S3ServiceBuilder::new(fs);
            b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            b.build()
        };
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();

        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime for S3 server");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                // Counting in a `service_fn` wrapper counts HTTP requests, not connections
                // (the SDK keeps connections alive).
                let svc = hyper::service::service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    hyper::service::Service::call(&service, req)
                });
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let svc = svc.clone();
                            tokio::spawn(async move {
                                let conn = ConnBuilder::new(TokioExecutor::new());
                                let _ = conn.serve_connection(TokioIo::new(socket), svc).await;
                            });
                        }
                    }
                }
            });
            // Dropping the runtime cancels the per-connection tasks.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        let addr = ready_rx.recv().expect("S3 server failed to start");
        S3Server {
            addr,
            root,
            requests,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    /// Stores an object by writing the file s3s-fs would serve (bucket = directory under the
    /// root, key = path below it, `/` makes subdirectories). No sidecar is needed: s3s-fs computes
    /// the ETag as the MD5 of the file when it has no stored one. Writing directly does not count
    /// as a request, so `request_count` reflects only what the code under test did.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) {
        let path = self.object_path(bucket, key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        // A previous PutObject through the protocol may have left a stored ETag/metadata that
        // would now be stale.
        for suffix in ["internal.json", "metadata.json"] {
            let _ = std::fs::remove_file(self.root.path().join(sidecar(bucket, key, suffix)));
        }
    }

    /// Reads an object back from disk (e.g. to check what the code under test uploaded).
    pub fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(bucket, key)).ok()
    }

    /// Creates an empty bucket (a directory), for ListObjects/HeadBucket to succeed.
    pub fn create_bucket(&self, bucket: &str) {
        std::fs::create_dir_all(self.root.path().join(bucket)).unwrap();
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn root(&self) -> &Path {
        self.root.path()
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

/// Name of the per-object sidecar s3s-fs keeps in the root (see `FileSystem::get_metadata_path`).
fn sidecar(bucket: &str, key: &str, suffix: &str) -> String {
    use base64::Engine as _;
    let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(".bucket-{}.object-{}.{suffix}", enc(bucket), enc(key))
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
