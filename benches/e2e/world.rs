//! The benchmark's world: seeded building events, aerial-looking JPEG tiles, and a loopback tile
//! server that answers every request after a seeded 80 ms ± 20 ms delay.
//!
//! Everything is a pure function of the seed, so two runs of `make bench` fetch the same tiles
//! with the same delays and decode the same bytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use image::{Rgb, RgbImage};
use serde_json::{Value, json};
use tilepredict::geo::{LatLon, from_pixel, metres_per_pixel, to_pixel};

use crate::support::tiles::{Handler, TileResponse, TileServer, encode_jpeg};

pub const SEED: u64 = 0x7115_2024;
/// Where the benchmark's buildings are (a Warsaw-like latitude: ≈ 0.18 m per pixel at z19).
pub const CENTRE: LatLon = LatLon {
    lat: 52.2297,
    lon: 21.0122,
};
pub const ZOOM: u8 = 19;
/// Distinct tile images served (by a hash of the tile address); decoding cost depends on the
/// bytes, not on which tile they claim to be.
const TILE_VARIANTS: usize = 24;
const JPEG_QUALITY: u8 = 85;

/// A named request: the buildings and the event sent to the function.
pub struct Case {
    pub name: &'static str,
    pub points: Vec<LatLon>,
    pub event: Value,
}

impl Case {
    fn new(name: &'static str, points: Vec<LatLon>) -> Self {
        let buildings: Vec<Value> = points
            .iter()
            .enumerate()
            .map(|(i, p)| json!({"id": format!("b{i}"), "lat": p.lat, "lon": p.lon}))
            .collect();
        Self {
            name,
            event: json!({ "buildings": buildings }),
            points,
        }
    }
}

/// 110 buildings spread uniformly over a disc 600 m across: one neighbourhood.
pub fn neighbourhood() -> Case {
    let mut rng = fastrand::Rng::with_seed(SEED);
    let points = (0..110)
        .map(|_| {
            let (r, a) = (300.0 * rng.f64().sqrt(), std::f64::consts::TAU * rng.f64());
            offset(CENTRE, r * a.cos(), r * a.sin())
        })
        .collect();
    Case::new("110 buildings / 600 m", points)
}

/// 1,000 buildings over a 3 km square, as a town is built: 12 neighbourhoods (centres uniform
/// in the square) with buildings normally distributed (σ = 150 m) around each.
pub fn town() -> Case {
    let mut rng = fastrand::Rng::with_seed(SEED + 1);
    let centres: Vec<(f64, f64)> = (0..12)
        .map(|_| (3000.0 * (rng.f64() - 0.5), 3000.0 * (rng.f64() - 0.5)))
        .collect();
    let points = (0..1000)
        .map(|i| {
            let (cx, cy) = centres[i % centres.len()];
            let (dx, dy) = gaussian_pair(&mut rng);
            let clamp = |v: f64| v.clamp(-1500.0, 1500.0);
            offset(CENTRE, clamp(cx + 150.0 * dx), clamp(cy + 150.0 * dy))
        })
        .collect();
    Case::new("1,000 buildings / 3 km", points)
}

/// The API case: `requests` requests of `per_request` buildings each, every building at least
/// 150 m from every other over a 20 km square (seeded), so no two chips share a tile and no
/// request finds another's tiles in the cache: every request downloads everything it needs.
pub fn api_requests(requests: usize, per_request: usize, seed: u64) -> Vec<Case> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut placed: Vec<(f64, f64)> = Vec::new();
    while placed.len() < requests * per_request {
        let (e, n) = (20_000.0 * (rng.f64() - 0.5), 20_000.0 * (rng.f64() - 0.5));
        if placed
            .iter()
            .all(|(pe, pn)| (pe - e).hypot(pn - n) >= API_SPACING_M)
        {
            placed.push((e, n));
        }
    }
    placed
        .chunks(per_request)
        .map(|chunk| {
            let points = chunk.iter().map(|(e, n)| offset(CENTRE, *e, *n)).collect();
            Case::new("API request", points)
        })
        .collect()
}

/// Least distance between two buildings of the API case: three z19 tiles (≈ 46 m each here),
/// so no two chips share one.
pub const API_SPACING_M: f64 = 150.0;

/// 256 buildings over the same 3 km square from another seed: the int8 bench model's
/// calibration set, apart from the measured cases so the agreement is measured on chips the
/// quantizer never saw.
pub fn calibration() -> Case {
    let mut rng = fastrand::Rng::with_seed(SEED + 2);
    let points = (0..256)
        .map(|_| {
            offset(
                CENTRE,
                3000.0 * (rng.f64() - 0.5),
                3000.0 * (rng.f64() - 0.5),
            )
        })
        .collect();
    Case::new("256 calibration buildings / 3 km", points)
}

/// The point `east`, `north` metres from `p` (flat-earth over a few km: fine for a benchmark).
fn offset(p: LatLon, east: f64, north: f64) -> LatLon {
    let m = metres_per_pixel(p.lat, ZOOM);
    let (x, y) = to_pixel(p, ZOOM);
    from_pixel(x + east / m, y - north / m, ZOOM)
}

/// Two independent standard normal samples (Box–Muller).
fn gaussian_pair(rng: &mut fastrand::Rng) -> (f64, f64) {
    let r = (-2.0 * (1.0 - rng.f64()).ln()).sqrt();
    let a = std::f64::consts::TAU * rng.f64();
    (r * a.cos(), r * a.sin())
}

/// Aerial-looking 256×256 JPEGs at quality 85: smooth multi-scale ground colour, rectangular
/// roofs with edges, and sensor grain, ≈ 20–30 KB each like real orthophoto tiles.
pub fn tile_variants() -> Vec<Vec<u8>> {
    (0..TILE_VARIANTS)
        .map(|i| encode_jpeg(&aerial_tile(SEED ^ (i as u64 * 0x9E37_79B9)), JPEG_QUALITY))
        .collect()
}

fn aerial_tile(seed: u64) -> RgbImage {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Ground: value noise at 64, 32, 16 and 8 px, mixed between grass, soil and asphalt.
    let octaves: Vec<(usize, f32, Vec<f32>)> = [
        (64usize, 0.45f32),
        (32, 0.2),
        (16, 0.15),
        (8, 0.1),
        (4, 0.1),
    ]
    .iter()
    .map(|&(cell, amp)| {
        let n = 256 / cell + 2;
        (cell, amp, (0..n * n).map(|_| rng.f32()).collect())
    })
    .collect();
    let ground = |x: u32, y: u32| -> f32 {
        octaves
            .iter()
            .map(|(cell, amp, grid)| {
                let n = 256 / cell + 2;
                let (fx, fy) = (x as f32 / *cell as f32, y as f32 / *cell as f32);
                let (ix, iy) = (fx as usize, fy as usize);
                let (tx, ty) = (fx.fract(), fy.fract());
                let at = |i: usize, j: usize| grid[j * n + i];
                let top = at(ix, iy) * (1.0 - tx) + at(ix + 1, iy) * tx;
                let bottom = at(ix, iy + 1) * (1.0 - tx) + at(ix + 1, iy + 1) * tx;
                amp * (top * (1.0 - ty) + bottom * ty)
            })
            .sum()
    };
    let palette = [
        [86.0, 112.0, 64.0],
        [128.0, 118.0, 92.0],
        [104.0, 104.0, 100.0],
    ];
    let mut img = RgbImage::from_fn(256, 256, |x, y| {
        let v = ground(x, y);
        let (a, b, t) = if v < 0.5 {
            (palette[0], palette[1], v * 2.0)
        } else {
            (palette[1], palette[2], (v - 0.5) * 2.0)
        };
        let mut px = [0u8; 3];
        for c in 0..3 {
            px[c] = (a[c] * (1.0 - t) + b[c] * t + 40.0 * (v - 0.5)).clamp(0.0, 255.0) as u8;
        }
        Rgb(px)
    });
    // Roofs: a few rectangles with a ridge line, grey (asbestos-cement-like) or red.
    for _ in 0..rng.usize(4..9) {
        let (w, h) = (rng.u32(24..70), rng.u32(20..60));
        let (x0, y0) = (rng.u32(0..256 - w), rng.u32(0..256 - h));
        let base: [i32; 3] = if rng.bool() {
            [150, 152, 150]
        } else {
            [170, 76, 52]
        };
        for y in y0..y0 + h {
            for x in x0..x0 + w {
                let shade = if y < y0 + h / 2 { 12 } else { -12 };
                let edge = if x == x0 || y == y0 || x == x0 + w - 1 || y == y0 + h - 1 {
                    -50
                } else {
                    0
                };
                let px = base.map(|c| (c + shade + edge).clamp(0, 255) as u8);
                img.put_pixel(x, y, Rgb(px));
            }
        }
    }
    // Sensor grain.
    for px in img.pixels_mut() {
        let g = rng.i32(-16..=16);
        for c in px.0.iter_mut() {
            *c = (i32::from(*c) + g + rng.i32(-6..=6)).clamp(0, 255) as u8;
        }
    }
    img
}

/// The tile server's latency model: every answer waits `mean ± jitter` (uniform), seeded by
/// the tile address and how often it was asked for, and the delays actually served are summed
/// so a run's mean latency can be read back.
pub struct Latency {
    pub mean: Duration,
    pub jitter: Duration,
    served_us: AtomicU64,
    count: AtomicU64,
}

impl Latency {
    pub fn new(mean: Duration, jitter: Duration) -> Arc<Self> {
        Arc::new(Self {
            mean,
            jitter,
            served_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        })
    }

    fn delay(&self, key: u64) -> Duration {
        let mut rng = fastrand::Rng::with_seed(SEED ^ key);
        let spread = self.jitter.as_secs_f64() * (2.0 * rng.f64() - 1.0);
        let d = Duration::from_secs_f64((self.mean.as_secs_f64() + spread).max(0.0));
        self.served_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        d
    }

    /// Forgets what was served (call before a measured run).
    pub fn reset(&self) {
        self.served_us.store(0, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
    }

    /// Requests answered since the last reset and their mean delay.
    pub fn served(&self) -> (u64, Duration) {
        let n = self.count.load(Ordering::Relaxed);
        let us = self.served_us.load(Ordering::Relaxed);
        (n, Duration::from_micros(us.checked_div(n).unwrap_or(0)))
    }
}

/// Serves `/{z}/{x}/{y}.jpg` from `variants` after the latency model's delay.
pub fn tile_server(variants: Arc<Vec<Vec<u8>>>, latency: Arc<Latency>) -> TileServer {
    let handler: Handler = Arc::new(move |req| {
        let Some((z, x, y)) = parse_jpg(&req.path) else {
            return TileResponse::status(404);
        };
        let address = (u64::from(z) << 58) ^ (x << 29) ^ y;
        let variant = (mix(address) % variants.len() as u64) as usize;
        let delay = latency.delay(mix(address ^ ((req.nth as u64) << 61)));
        TileResponse::jpeg(variants[variant].clone()).with_delay(delay)
    });
    TileServer::start(handler)
}

fn parse_jpg(path: &str) -> Option<(u32, u64, u64)> {
    let mut it = path.strip_prefix('/')?.strip_suffix(".jpg")?.split('/');
    let z = it.next()?.parse().ok()?;
    let x = it.next()?.parse().ok()?;
    let y = it.next()?.parse().ok()?;
    it.next().is_none().then_some((z, x, y))
}

/// SplitMix64's finaliser: a well-spread hash of a 64-bit key.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
