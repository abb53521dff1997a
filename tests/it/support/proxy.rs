//! A TCP proxy on 127.0.0.1 in front of a test server, whose behaviour can be switched while
//! the function runs: forward, delay each connection, hang (accept, never answer) or refuse
//! (accept, close at once). It is how tests make a real server slow, dead or flapping without
//! touching the server. Switching modes also cuts the connections already open, so a client's
//! keep-alive pool cannot hide the change.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Forward,
    /// Wait this long after accepting, then forward.
    Delay(Duration),
    /// Accept and read, never answer.
    Hang,
    /// Accept and close at once.
    Refuse,
}

pub struct TcpProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<AtomicUsize>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpProxy {
    /// Proxies to `upstream` (`host:port`) in `mode`.
    pub fn start(upstream: SocketAddr, mode: Mode) -> TcpProxy {
        let (mode_tx, mode_rx) = watch::channel(mode);
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let (shutdown, mut stop) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("tokio runtime for the proxy");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind proxy");
                ready_tx.send(listener.local_addr().unwrap()).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut stop => break,
                        accepted = listener.accept() => {
                            let Ok((client, _)) = accepted else { continue };
                            counter.fetch_add(1, Ordering::SeqCst);
                            tokio::spawn(serve(client, upstream, mode_rx.clone()));
                        }
                    }
                }
            });
            // Cancels every connection task.
            rt.shutdown_timeout(Duration::from_secs(1));
        });
        let addr = ready_rx.recv().expect("proxy failed to start");
        TcpProxy {
            addr,
            mode: mode_tx,
            connections,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches mode and cuts every open connection.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Connections accepted so far (one per client attempt without keep-alive reuse).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
) {
    let current = *mode.borrow_and_update();
    let work = async {
        match current {
            Mode::Refuse => {}
            Mode::Hang => {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut client, &mut sink).await;
            }
            Mode::Forward | Mode::Delay(_) => {
                if let Mode::Delay(delay) = current {
                    tokio::time::sleep(delay).await;
                }
                if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            }
        }
    };
    // A mode change ends the connection, whatever it was doing.
    tokio::select! {
        _ = work => {}
        _ = mode.changed() => {}
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.shutdown.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
