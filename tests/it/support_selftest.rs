//! Checks the test-support servers themselves, in-process, so a failing product test can be
//! trusted to be about the product. The Runtime API emulator's check starts `bootstrap` only
//! for its process plumbing (logs, exit, memory); a hand-written client answers the events.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::runtime::{Invocation, LambdaProcess};
use crate::support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use crate::support::tiles::{self, TileResponse, TileServer};

fn s3_client(server: &S3Server) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version_latest()
        .endpoint_url(server.endpoint())
        .force_path_style(true)
        .credentials_provider(creds)
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn s3_server_serves_objects_with_sigv4() {
    let server = S3Server::start();
    server.put("models", "v1/model.onnx", b"hello model");
    let client = s3_client(&server);

    let got = client
        .get_object()
        .bucket("models")
        .key("v1/model.onnx")
        .send()
        .await
        .unwrap();
    // No sidecar was written: s3s-fs derives the ETag from the file's MD5.
    assert_eq!(got.e_tag(), Some("\"65a4f03769f3a69db474c6237535aea3\""));
    let bytes = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&bytes[..], b"hello model");

    let err = client
        .get_object()
        .bucket("models")
        .key("missing")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error().is_some_and(|e| e.is_no_such_key()),
        "{err:?}"
    );

    // Wrong secret: SigV4 is really checked.
    let bad = aws_sdk_s3::Client::from_conf(
        s3_client(&server)
            .config()
            .to_builder()
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "AKIDTEST", "wrong", None, None, "t",
            ))
            .build(),
    );
    assert!(
        bad.get_object()
            .bucket("models")
            .key("v1/model.onnx")
            .send()
            .await
            .is_err()
    );
    assert_eq!(server.request_count(), 3);
    assert!(
        server
            .env()
            .iter()
            .any(|(k, v)| k == "AWS_ENDPOINT_URL" && *v == server.endpoint())
    );
}

#[tokio::test]
async fn tile_server_serves_world_and_counts() {
    let server = TileServer::start(tiles::xyz_world_handler());
    let http = reqwest::Client::new();
    let url = format!("{}/3/2/5.png", server.base_url());
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert!(resp.headers().contains_key("content-length"));
    let img = image::load_from_memory(&resp.bytes().await.unwrap())
        .unwrap()
        .to_rgb8();
    assert_eq!(img, tiles::render_tile(3, 2, 5));
    assert_eq!(
        img.get_pixel(10, 20).0,
        tiles::world_pixel(2 * 256 + 10, 5 * 256 + 20)
    );

    let missing = http
        .get(format!("{}/3/8/0.png", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    http.get(&url).send().await.unwrap();
    assert_eq!(server.count("/3/2/5.png"), 2);
    assert_eq!(server.total(), 3);
    assert_eq!(server.requests()[2].nth, 1);
}

#[tokio::test]
async fn tile_server_delays_do_not_block_other_requests() {
    let server = TileServer::start(std::sync::Arc::new(|req: &tiles::TileRequest| {
        if req.path == "/slow" {
            TileResponse::status(200).with_delay(Duration::from_secs(3))
        } else {
            TileResponse::jpeg(tiles::encode_jpeg(&tiles::render_tile(0, 0, 0), 90))
        }
    }));
    let http = reqwest::Client::new();
    let slow = tokio::spawn(http.get(format!("{}/slow", server.base_url())).send());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t0 = std::time::Instant::now();
    let fast = http
        .get(format!("{}/fast?x=1", server.base_url()))
        .send()
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(fast.headers()["content-type"], "image/jpeg");
    assert_eq!(server.count("/fast?x=1"), 1);
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
}

/// Minimal HTTP/1.1 exchange over a fresh connection: `(status, headers, body)`.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let Some((k, v)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .expect("Content-Length")
        .1
        .parse()
        .unwrap();
    let mut buf = vec![0; len];
    r.read_exact(&mut buf).unwrap();
    (status, headers, String::from_utf8(buf).unwrap())
}

/// Drives the emulator with a hand-written runtime client. The `bootstrap` child is started
/// without `AWS_LAMBDA_RUNTIME_API` so it cannot compete for `/next`; it only exercises the
/// process plumbing (logs, exit, RSS).
#[test]
fn runtime_emulator_round_trip() {
    let mut lambda = LambdaProcess::spawn_with(&[], &["AWS_LAMBDA_RUNTIME_API"]);
    let api = lambda.api_addr().to_string();
    let client = std::thread::spawn(move || {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let (status, headers, body) =
                http(&api, "GET", "/2018-06-01/runtime/invocation/next", "");
            assert_eq!(status, 200);
            let h = |n: &str| {
                headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.clone())
                    .unwrap()
            };
            let id = h("lambda-runtime-aws-request-id");
            ids.push(id.clone());
            assert!(h("lambda-runtime-deadline-ms").parse::<u128>().is_ok());
            let event: serde_json::Value = serde_json::from_str(&body).unwrap();
            if event["fail"] == true {
                let path = format!("/2018-06-01/runtime/invocation/{id}/error");
                let (st, _, _) = http(
                    &api,
                    "POST",
                    &path,
                    r#"{"errorType":"Boom","errorMessage":"bad"}"#,
                );
                assert_eq!(st, 202);
            } else {
                let path = format!("/2018-06-01/runtime/invocation/{id}/response");
                assert_eq!(
                    http(&api, "POST", &path, &format!(r#"{{"echo":{body}}}"#)).0,
                    202
                );
            }
        }
        let err = r#"{"errorType":"Runtime.Init","errorMessage":"late"}"#;
        assert_eq!(
            http(&api, "POST", "/2018-06-01/runtime/init/error", err).0,
            202
        );
        ids
    });

    let (out, took) = lambda.invoke_timed(&serde_json::json!({"n": 1}), 5_000);
    assert_eq!(
        out,
        Invocation::Response(serde_json::json!({"echo": {"n": 1}}))
    );
    assert!(took < Duration::from_secs(5));
    match lambda.invoke(&serde_json::json!({"fail": true}), 5_000) {
        Invocation::Error {
            error_type,
            error_message,
            header_error_type,
        } => {
            assert_eq!(
                (error_type.as_str(), error_message.as_str()),
                ("Boom", "bad")
            );
            assert_eq!(header_error_type, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        lambda.wait_init_error(Duration::from_secs(5)),
        Some(("Runtime.Init".into(), "late".into()))
    );
    // The ids handed to the function are the ones `request_ids` reports, made from its pid.
    let ids = client.join().unwrap();
    assert_eq!(ids, lambda.request_ids());
    assert_eq!(ids[0], LambdaProcess::request_id(lambda.pid(), 1));
    // Readable while the child lives (it may already be gone), `None` once it has exited.
    assert!(lambda.peak_rss_kb().is_none_or(|kb| kb > 0));
    let status = lambda.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some(),
        "bootstrap without a Runtime API should exit:\n{}",
        lambda.logs()
    );
    assert_eq!(lambda.rss_kb(), None);
}
