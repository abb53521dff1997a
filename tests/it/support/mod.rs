//! Test support shared by the integration tests (`mod support;`). Everything here is real:
//! real sockets on 127.0.0.1 (ephemeral ports), a real S3 protocol endpoint with SigV4, a real
//! HTTP tile server, and the real `bootstrap` binary driven through an emulated Lambda
//! Runtime API. Nothing is mocked, so what passes here passes for the same reasons on Lambda.

pub mod batch;
pub mod browser;
pub mod function;
pub mod loopback;
pub mod proxy;
pub mod runtime;
pub mod s3;
pub mod tiles;
