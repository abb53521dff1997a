//! `blob::load` against the loopback S3 server, in-process: large objects arrive in parallel
//! ranged parts and are put back together byte for byte, small ones in one request, an empty
//! one as empty, a missing one as an error naming it.
//!
//! In-process, in a child process of its own: the S3 client is built once per process from the
//! environment, which this test sets before anything reads it, and setting the environment is
//! only sound while no other thread reads it. The integration tests share one process, so
//! `rusty_fork` runs this test alone in a fresh copy of the test binary.

use std::time::Duration;

use rusty_fork::rusty_fork_test;
use tilepredict::blob::{BlobUri, load};

use crate::support::s3::{S3Server, e_tag};

const BUCKET: &str = "models";

fn uri(key: &str) -> BlobUri {
    BlobUri::S3 {
        bucket: BUCKET.into(),
        key: key.into(),
    }
}

rusty_fork_test! {
    #[test]
    fn objects_come_back_whole_in_as_many_requests_as_their_parts() {
        loads_each_object_whole();
    }
}

/// The test itself, run by `rusty_fork` in a child process that runs nothing else.
fn loads_each_object_whole() {
    let s3 = S3Server::start();
    for (name, value) in s3.env() {
        // SAFETY: the only test of this (child) process, before any thread of its own reads
        // the environment.
        unsafe { std::env::set_var(name, value) };
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let timeout = Duration::from_secs(20);

    // 20 MiB + 5 bytes: the first 4 MiB part, then five more.
    let mut rng = fastrand::Rng::with_seed(11);
    let large: Vec<u8> = (0..(20 << 20) + 5).map(|_| rng.u8(..)).collect();
    s3.put(BUCKET, "large.onnx", &large);
    let before = s3.request_count();
    let loaded = runtime
        .block_on(load(&uri("large.onnx"), "model", timeout))
        .unwrap();
    assert_eq!(loaded.bytes.len(), large.len());
    assert!(
        loaded.bytes == large,
        "the parts were put back out of order"
    );
    assert_eq!(loaded.version, e_tag(&large), "the ETag is the version");
    assert_eq!(s3.request_count() - before, 6, "one request per 4 MiB part");

    let small = b"a small model".to_vec();
    s3.put(BUCKET, "small.onnx", &small);
    let before = s3.request_count();
    let loaded = runtime
        .block_on(load(&uri("small.onnx"), "model", timeout))
        .unwrap();
    assert_eq!(&loaded.bytes[..], &small[..]);
    assert_eq!(s3.request_count() - before, 1);

    // An empty object has no byte range to ask for: it is read whole, and is empty.
    s3.put(BUCKET, "empty.onnx", b"");
    let loaded = runtime
        .block_on(load(&uri("empty.onnx"), "model", timeout))
        .unwrap();
    assert!(loaded.bytes.is_empty());

    let missing = runtime
        .block_on(load(&uri("missing.onnx"), "model", timeout))
        .err()
        .expect("a missing object is an error");
    assert!(
        missing.contains("cannot load model s3://models/missing.onnx")
            && missing.contains("NoSuchKey"),
        "{missing}"
    );
}
