//! A real HTTP tile server with a pluggable handler, plus a synthetic "world" whose every pixel
//! is predictable, so tests can check that tiles were fetched, stitched and cropped correctly.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use image::RgbImage;

/// Decides the answer to one request. Called on the request's own thread.
#[allow(dead_code)]
pub type Handler = Arc<dyn Fn(&TileRequest) -> TileResponse + Send + Sync>;

#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct TileRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// How many times this exact path+query was requested before (0 on the first request), so
    /// handlers can fail the first attempt and succeed on retry.
    pub nth: usize,
}

#[allow(dead_code)]
#[derive(Clone, Debug)]
pub struct TileResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Sleep before answering (timeouts, concurrency). Other requests are not held up.
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

#[allow(dead_code)]
impl TileResponse {
    fn ok(content_type: &str, body: Vec<u8>) -> Self {
        TileResponse {
            status: 200,
            content_type: content_type.into(),
            body,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }
    pub fn png(body: Vec<u8>) -> Self {
        Self::ok("image/png", body)
    }
    pub fn jpeg(body: Vec<u8>) -> Self {
        Self::ok("image/jpeg", body)
    }
    /// An empty-bodied answer with the given status (e.g. 404, 429, 500).
    pub fn status(code: u16) -> Self {
        TileResponse {
            status: code,
            ..Self::ok("text/plain", Vec::new())
        }
    }
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Default)]
struct Log {
    all: Vec<TileRequest>,
    counts: HashMap<String, usize>,
}

/// Serves on `127.0.0.1:<ephemeral>`, one thread per request. Dropping it stops accepting.
#[allow(dead_code)]
pub struct TileServer {
    server: Arc<tiny_http::Server>,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[allow(dead_code)]
impl TileServer {
    pub fn start(handler: Handler) -> TileServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind tile server"));
        let log = Arc::new(Mutex::new(Log::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (server, log, stop) = (server.clone(), log.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok(rq) = server.recv() else { continue };
                    let (log, handler) = (log.clone(), handler.clone());
                    std::thread::spawn(move || serve(rq, &log, &*handler));
                }
            })
        };
        TileServer {
            server,
            log,
            stop,
            thread: Some(thread),
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.server_addr().to_ip().unwrap())
    }

    /// Requests received for exactly this path (plus `?query` if it had one).
    pub fn count(&self, path_and_query: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .counts
            .get(path_and_query)
            .copied()
            .unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.log.lock().unwrap().all.len()
    }

    pub fn requests(&self) -> Vec<TileRequest> {
        self.log.lock().unwrap().all.clone()
    }
}

fn serve(
    mut rq: tiny_http::Request,
    log: &Mutex<Log>,
    handler: &(dyn Fn(&TileRequest) -> TileResponse + Send + Sync),
) {
    let url = rq.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let headers = rq
        .headers()
        .iter()
        .map(|h| (h.field.to_string(), h.value.to_string()))
        .collect();
    let req = {
        let mut log = log.lock().unwrap();
        let n = log.counts.entry(url.clone()).or_default();
        let req = TileRequest {
            path: path.into(),
            query: query.into(),
            headers,
            nth: *n,
        };
        *n += 1;
        log.all.push(req.clone());
        req
    };
    let _ = std::io::copy(rq.as_reader(), &mut std::io::sink());
    let resp = handler(&req);
    std::thread::sleep(resp.delay);
    let mut out = tiny_http::Response::from_data(resp.body)
        .with_status_code(resp.status)
        .with_chunked_threshold(usize::MAX); // always Content-Length, like typical tile servers
    let mut headers = resp.headers;
    headers.push(("Content-Type".into(), resp.content_type));
    for (k, v) in headers {
        out.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
    }
    let _ = rq.respond(out);
}

impl Drop for TileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Colour of global pixel (`gx`, `gy`) at whatever zoom is requested. Red/green give the position
/// inside a 256-pixel cell and blue changes between neighbouring cells, so any off-by-one or
/// wrong-tile error in stitching changes the pixels.
#[allow(dead_code)]
pub fn world_pixel(gx: u64, gy: u64) -> [u8; 3] {
    [
        (gx % 256) as u8,
        (gy % 256) as u8,
        ((gx / 256 + gy / 256) * 37 % 256) as u8,
    ]
}

/// Tile `x`,`y` of the synthetic world: pixel (i, j) = `world_pixel(x*256+i, y*256+j)`. The
/// world is defined in pixel space, so `z` does not change the colours.
#[allow(dead_code)]
pub fn render_tile(_z: u32, x: u64, y: u64) -> RgbImage {
    RgbImage::from_fn(256, 256, |i, j| {
        image::Rgb(world_pixel(x * 256 + u64::from(i), y * 256 + u64::from(j)))
    })
}

#[allow(dead_code)]
pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

#[allow(dead_code)]
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

/// Every request gets the same 256×256 PNG of one colour.
#[allow(dead_code)]
pub fn solid_tile_handler(color: [u8; 3]) -> Handler {
    let png = encode_png(&RgbImage::from_pixel(256, 256, image::Rgb(color)));
    Arc::new(move |_| TileResponse::png(png.clone()))
}

/// Serves the synthetic world at `/{z}/{x}/{y}.png` (404 for anything else, including tiles
/// outside the 2^z × 2^z grid).
#[allow(dead_code)]
pub fn xyz_world_handler() -> Handler {
    Arc::new(|req| match parse_xyz(&req.path) {
        Some((z, x, y)) => TileResponse::png(encode_png(&render_tile(z, x, y))),
        None => TileResponse::status(404),
    })
}

/// Parses `/{z}/{x}/{y}.png` into in-range tile coordinates.
#[allow(dead_code)]
pub fn parse_xyz(path: &str) -> Option<(u32, u64, u64)> {
    let rest = path.strip_prefix('/')?.strip_suffix(".png")?;
    let mut it = rest.split('/');
    let (z, x, y) = (
        it.next()?.parse::<u32>().ok()?,
        it.next()?.parse::<u64>().ok()?,
        it.next()?.parse::<u64>().ok()?,
    );
    (it.next().is_none() && z <= 30 && x < 1 << z && y < 1 << z).then_some((z, x, y))
}
