//! The one way the test servers serve HTTP: hyper on `127.0.0.1:<ephemeral>`, on a thread with
//! its own tokio runtime (so plain `#[test]`s and `#[tokio::test]`s of either flavour can use
//! them without starving them), one task per connection, so a burst of concurrent connections
//! is served at once. (tiny_http's thread pool was seen to park some connections of such a
//! burst until another connection closed, which looked exactly like a client timeout, and to
//! leave some of a function's long-polling `/next` connections unserved.)

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use tokio::sync::oneshot;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A running server; dropping it stops accepting and ends its runtime.
pub struct Loopback {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Loopback {
    /// Serves every accepted connection with a service from `service()` (called once per
    /// connection). `name` is for the panic should binding fail.
    pub fn start<F, S, B>(name: &'static str, service: F) -> Loopback
    where
        F: Fn() -> S + Send + 'static,
        S: hyper::service::Service<hyper::Request<Incoming>, Response = hyper::Response<B>>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime for the {name}: {e}"));
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .unwrap_or_else(|e| panic!("bind the {name}: {e}"));
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((socket, _)) = accepted else { continue };
                            let svc = service();
                            tokio::spawn(async move {
                                let conn = ConnBuilder::new(TokioExecutor::new());
                                let _ = conn.serve_connection(TokioIo::new(socket), svc).await;
                            });
                        }
                    }
                }
            });
            // Dropping the runtime cancels the per-connection tasks.
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let addr = ready_rx
            .recv()
            .unwrap_or_else(|_| panic!("the {name} failed to start"));
        Loopback {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
