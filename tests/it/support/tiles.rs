//! A real HTTP tile server with a pluggable handler, plus a synthetic "world" whose every pixel
//! is predictable, so tests can check that tiles were fetched, stitched and cropped correctly.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use image::RgbImage;

use super::loopback::Loopback;

/// Decides the answer to one request. Called on a blocking thread of the server's runtime.
pub type Handler = Arc<dyn Fn(&TileRequest) -> TileResponse + Send + Sync>;

#[derive(Clone, Debug)]
pub struct TileRequest {
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// How many times this exact path+query was requested before (0 on the first request), so
    /// handlers can fail the first attempt and succeed on retry.
    pub nth: usize,
}

#[derive(Clone, Debug)]
pub struct TileResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Sleep before answering (timeouts, concurrency). Other requests are not held up.
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

impl TileResponse {
    pub fn ok(content_type: &str, body: Vec<u8>) -> Self {
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
pub struct TileServer {
    server: Loopback,
    log: Arc<Mutex<Log>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// hyper on its own runtime thread (see `loopback`): a burst of concurrent connections (the
/// pipeline opens up to MAX_CONCURRENT_DOWNLOADS at once) is served at once.
impl TileServer {
    pub fn start(handler: Handler) -> TileServer {
        let log = Arc::new(Mutex::new(Log::default()));
        let server_log = log.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted_count = connections.clone();
        let server = Loopback::start("tile server", move || {
            accepted_count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (log, handler) = (server_log.clone(), handler.clone());
            hyper::service::service_fn(move |req| serve(req, log.clone(), handler.clone()))
        });
        TileServer {
            server,
            log,
            connections,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr)
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

    /// TCP connections accepted so far (a keep-alive client opens few, and reuses them).
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn total(&self) -> usize {
        self.log.lock().unwrap().all.len()
    }

    pub fn requests(&self) -> Vec<TileRequest> {
        self.log.lock().unwrap().all.clone()
    }
}

async fn serve(
    rq: hyper::Request<hyper::body::Incoming>,
    log: Arc<Mutex<Log>>,
    handler: Handler,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let url = rq
        .uri()
        .path_and_query()
        .map_or_else(|| rq.uri().path().to_string(), |pq| pq.as_str().to_string());
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let headers = rq
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
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
    let resp = tokio::task::spawn_blocking(move || handler(&req))
        .await
        .expect("tile handler panicked");
    tokio::time::sleep(resp.delay).await;
    // Always Content-Length (a Full body), like typical tile servers.
    let mut out = hyper::Response::builder()
        .status(resp.status)
        .header("Content-Type", resp.content_type);
    for (k, v) in resp.headers {
        out = out.header(k, v);
    }
    Ok(out
        .body(Full::new(Bytes::from(resp.body)))
        .expect("valid response"))
}

/// Colour of global pixel (`gx`, `gy`) at whatever zoom is requested. Red/green give the position
/// inside a 256-pixel cell and blue changes between neighbouring cells, so any off-by-one or
/// wrong-tile error in stitching changes the pixels.
pub fn world_pixel(gx: u64, gy: u64) -> [u8; 3] {
    [
        (gx % 256) as u8,
        (gy % 256) as u8,
        ((gx / 256 + gy / 256) * 37 % 256) as u8,
    ]
}

/// Tile `x`,`y` of the synthetic world: pixel (i, j) = `world_pixel(x*256+i, y*256+j)`. The
/// world is defined in pixel space, so `z` does not change the colours.
pub fn render_tile(_z: u32, x: u64, y: u64) -> RgbImage {
    RgbImage::from_fn(256, 256, |i, j| {
        image::Rgb(world_pixel(x * 256 + u64::from(i), y * 256 + u64::from(j)))
    })
}

pub fn encode_png(img: &RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .unwrap();
    out
}

/// Every request gets the same 256×256 PNG of one colour.
pub fn solid_tile_handler(color: [u8; 3]) -> Handler {
    let png = encode_png(&RgbImage::from_pixel(256, 256, image::Rgb(color)));
    Arc::new(move |_| TileResponse::png(png.clone()))
}

/// Serves the synthetic world at `/{z}/{x}/{y}.png` (404 for anything else, including tiles
/// outside the 2^z × 2^z grid).
pub fn xyz_world_handler() -> Handler {
    Arc::new(|req| match parse_xyz(&req.path) {
        Some((z, x, y)) => TileResponse::png(encode_png(&render_tile(z, x, y))),
        None => TileResponse::status(404),
    })
}

/// Parses `/{z}/{x}/{y}.png` into in-range tile coordinates.
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

/// A decompression bomb's calling card: a ~70-byte PNG whose header declares `width`×`height`
/// (a 1×1 PNG with its IHDR patched and its CRC recomputed, so the file is well-formed up to
/// its too-short pixel data). Decoding it naively would allocate width·height·3 bytes.
pub fn bomb_png(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode_png(&RgbImage::new(1, 1));
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height; the CRC covers the
    // chunk type and its 13 data bytes.
    assert_eq!(&png[12..16], b"IHDR");
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

/// CRC-32 (IEEE 802.3, as PNG chunks use), bit by bit: small inputs only.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Global pixel of a point in a web-mercator world `world` pixels wide (the slippy-map
/// formula, written here on its own so tests do not check the product against itself).
pub fn pixel_of(lat: f64, lon: f64, world: f64) -> (f64, f64) {
    let x = (lon + 180.0) / 360.0 * world;
    let y = (1.0 - lat.to_radians().tan().asinh() / std::f64::consts::PI) / 2.0 * world;
    (x, y)
}

/// The point (`lat`, `lon`) at a global pixel (inverse of [`pixel_of`]).
pub fn point_at(x: f64, y: f64, world: f64) -> (f64, f64) {
    let lon = x / world * 360.0 - 180.0;
    let lat = (std::f64::consts::PI * (1.0 - 2.0 * y / world))
        .sinh()
        .atan()
        .to_degrees();
    (lat, lon)
}

/// A point at pixel (`px`, `py`) of tile `x`,`y` at zoom `z`: a chip of side ≤ 2·min(px, py,
/// 256 − px, 256 − py) centred there needs that tile only.
pub fn point_in_tile(z: u8, x: u32, y: u32, px: f64, py: f64) -> (f64, f64) {
    point_at(
        f64::from(x) * 256.0 + px,
        f64::from(y) * 256.0 + py,
        256.0 * 2f64.powi(i32::from(z)),
    )
}

/// Serves the files under `root` at their relative paths, honouring `Range: bytes=a-b` with 206
/// and `Content-Range` (as S3, CloudFront and static web servers do); 404 for a missing file.
pub fn files_handler(root: std::path::PathBuf) -> Handler {
    Arc::new(move |req| {
        let path = root.join(req.path.trim_start_matches('/'));
        let Ok(bytes) = std::fs::read(&path) else {
            return TileResponse::status(404);
        };
        let range = req
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("range"))
            .and_then(|(_, v)| v.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)));
        let total = bytes.len();
        match range {
            None => TileResponse::ok("image/tiff", bytes),
            Some((start, _)) if start >= total => TileResponse::status(416),
            Some((start, end)) => {
                let end = end.min(total - 1);
                let mut answer = TileResponse::ok("image/tiff", bytes[start..=end].to_vec())
                    .with_header("Content-Range", &format!("bytes {start}-{end}/{total}"));
                answer.status = 206;
                answer
            }
        }
    })
}
