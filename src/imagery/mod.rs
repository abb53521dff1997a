//! Imagery: from buildings' positions to the decoded images their chips need, and the chips.
//!
//! `source` says what `TILE_URL` names. For templates (XYZ, static map, WMS), `template` turns
//! a chip's window into URLs, `fetch` gets bytes, `decode` makes RGB8 images and `chip`
//! stitches them. For GeoTIFFs, `geotiff` reads headers and internal tiles by byte ranges and
//! warps them into the chip. `plan` is the shape both take for the pipeline's assembly, which
//! decides when each step runs (sharing images between chips); `cache` keeps images warm
//! across invocations, and `flight` makes concurrent requests for one fetch unit share a
//! single fetch and decode. This module only knows how.

pub mod cache;
pub mod chip;
pub mod decode;
pub mod fetch;
pub mod flight;
pub mod geotiff;
pub mod plan;
pub mod source;
pub mod template;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use image::{GrayImage, RgbImage};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::error::{BuildingError, ErrorCode};
use crate::geo::{ChipWindow, LatLon, metres_per_pixel};
use cache::ImageCache;
use fetch::Fetcher;
use flight::{Flights, Joined};
use geotiff::GeoTiffSource;
use geotiff::read::{Counters, RangeReader};
use plan::{ChipPlan, Compose, RequestPlan, Unit, UnitFetch};
use template::TileTemplate;

/// A decoded image: RGB pixels and, for GeoTIFF tiles with a mask, alpha or nodata, which of
/// them hold data (255) or not (0). `None` means every pixel does.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub rgb: RgbImage,
    pub valid: Option<GrayImage>,
}

impl Image {
    pub fn opaque(rgb: RgbImage) -> Self {
        Self { rgb, valid: None }
    }

    /// A tile with no data at all.
    pub fn empty(width: u32, height: u32) -> Self {
        Self {
            rgb: RgbImage::new(width, height),
            valid: Some(GrayImage::new(width, height)),
        }
    }

    /// Decoded bytes held, for the cache's budget.
    pub fn bytes(&self) -> usize {
        self.rgb.as_raw().len() + self.valid.as_ref().map_or(0, |m| m.as_raw().len())
    }
}

/// A fetch unit's images, fetched and decoded once for every request waiting for them (in the
/// unit's order), and the decoding time.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub images: Vec<Result<Arc<Image>, BuildingError>>,
    pub decode: Duration,
}

/// Where chips come from.
pub enum Source {
    Template(TileTemplate),
    GeoTiff(GeoTiffSource),
}

/// Everything needed to turn positions into chip images; one per sandbox.
pub struct Imagery {
    source: Source,
    fetcher: Arc<Fetcher>,
    cache: Option<Mutex<ImageCache>>,
    /// Fetch units being fetched and decoded, by [`Unit::key`]: one flight for all requests.
    flights: Flights<Loaded>,
    zoom: u8,
    chip_size: u32,
    /// `CHIP_GSD_M`: metres per chip pixel on the ground, instead of `zoom`'s resolution.
    gsd_m: Option<f64>,
}

impl Imagery {
    /// A template source (XYZ, static map, WMS) at `zoom`'s resolution.
    pub fn new(
        template: TileTemplate,
        fetcher: Fetcher,
        zoom: u8,
        chip_size: u32,
        cache_bytes: usize,
    ) -> Self {
        Self::with_source(
            Source::Template(template),
            Arc::new(fetcher),
            zoom,
            chip_size,
            cache_bytes,
        )
    }

    pub fn with_source(
        source: Source,
        fetcher: Arc<Fetcher>,
        zoom: u8,
        chip_size: u32,
        cache_bytes: usize,
    ) -> Self {
        Self {
            source,
            fetcher,
            cache: (cache_bytes > 0).then(|| Mutex::new(ImageCache::new(cache_bytes))),
            flights: Flights::new(),
            zoom,
            chip_size,
            gsd_m: None,
        }
    }

    /// Chips of `gsd_m` metres per pixel, whatever the zoom (`CHIP_GSD_M`).
    pub fn with_ground_resolution(mut self, gsd_m: Option<f64>) -> Self {
        self.gsd_m = gsd_m;
        self
    }

    /// A byte-range reader sharing this imagery's HTTP client (for GeoTIFF sources).
    pub fn range_reader(fetcher: &Arc<Fetcher>) -> Arc<RangeReader> {
        Arc::new(RangeReader::new(Arc::clone(fetcher)))
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Chip side in pixels (before resizing to the model's input).
    pub fn chip_size(&self) -> u32 {
        self.chip_size
    }

    /// The square of web-mercator pixels the chip centred on `p` covers. Positions with the
    /// same window get the same chip. With `CHIP_GSD_M`, the zoom is the coarsest whose pixels
    /// are no larger than that on the ground at `p`'s latitude, and the window is as many of
    /// its pixels as make `CHIP_SIZE × CHIP_GSD_M` metres.
    pub fn window(&self, p: LatLon) -> ChipWindow {
        match self.gsd_m {
            None => ChipWindow::centred_on(p, self.zoom, self.chip_size),
            Some(gsd) => {
                let zoom = (0..=24u8)
                    .find(|z| metres_per_pixel(p.lat, *z) <= gsd * (1.0 + 1e-9))
                    .unwrap_or(24);
                let side = f64::from(self.chip_size) * gsd / metres_per_pixel(p.lat, zoom);
                ChipWindow::centred_on(p, zoom, (side.round() as u32).max(1))
            }
        }
    }

    /// Every chip's images and how to make it, for the positions `points` (whose windows all
    /// differ). GeoTIFF sources may read file headers here (counted in `counters`).
    pub async fn plan(
        &self,
        points: &[LatLon],
        cutoff: Instant,
        download_slots: &Semaphore,
        counters: &Arc<Counters>,
    ) -> RequestPlan {
        let windows: Vec<ChipWindow> = points.iter().map(|p| self.window(*p)).collect();
        match &self.source {
            Source::Template(template) => plan_template(template, &windows),
            Source::GeoTiff(source) => {
                let cached = |key: &str| {
                    self.cache
                        .as_ref()
                        .and_then(|c| c.lock().ok())
                        .is_some_and(|c| c.contains(key))
                };
                let ctx = geotiff::PlanContext {
                    cutoff,
                    download_slots,
                    counters,
                    cached: &cached,
                };
                source.plan(&windows, points, self.chip_size, &ctx).await
            }
        }
    }

    /// The images the chip centred on `p` needs, with their placement (template sources; none
    /// for GeoTIFFs). For tools that fetch on their own (the benchmark's two-phase baseline).
    pub fn template_parts(&self, p: LatLon) -> Vec<template::ImagePart> {
        match &self.source {
            Source::Template(template) => template.plan(&self.window(p)),
            Source::GeoTiff(_) => Vec::new(),
        }
    }

    /// The bytes at `url`, through the sandbox's HTTP client (retries, timeouts, body cap).
    pub async fn fetch_url(&self, url: &str, cutoff: Instant) -> Result<Bytes, BuildingError> {
        self.fetcher.fetch(url, cutoff).await
    }

    pub fn cached(&self, key: &str) -> Option<Arc<Image>> {
        self.cache.as_ref()?.lock().ok()?.get(key)
    }

    /// Every image of `unit` from the warm cache (`keys` is the plan's image keys), or `None`
    /// if any is missing.
    pub fn cached_unit(&self, unit: &Unit, keys: &[String]) -> Option<Vec<Arc<Image>>> {
        unit.images.iter().map(|&i| self.cached(&keys[i])).collect()
    }

    /// The unit's images from the warm cache, else a seat on the one fetch of the unit in
    /// flight, started with `load()` when no other request has started it. `load` must keep
    /// what it decodes ([`Imagery::decode`] does), so no request misses both the cache and the
    /// flight.
    pub fn cached_or_join<F>(
        &self,
        unit: &Unit,
        keys: &[String],
        load: impl FnOnce() -> F,
    ) -> Joined<Vec<Arc<Image>>, Loaded>
    where
        F: Future<Output = Loaded> + Send + 'static,
    {
        let lookup = || self.cached_unit(unit, keys);
        self.flights.join_unless(&unit.key(keys), lookup, load)
    }

    pub fn remember(&self, key: &str, image: &Arc<Image>) {
        if let Some(cache) = &self.cache
            && let Ok(mut cache) = cache.lock()
        {
            cache.put(key.to_string(), Arc::clone(image));
        }
    }

    /// The bytes of one unit: one body per URL or range.
    pub async fn fetch(
        &self,
        unit: &Unit,
        cutoff: Instant,
        counters: &Counters,
    ) -> Result<Vec<Bytes>, BuildingError> {
        match (&unit.fetch, &self.source) {
            (UnitFetch::Url { url, .. }, _) => Ok(vec![self.fetch_url(url, cutoff).await?]),
            (UnitFetch::Tiles { header, ranges, .. }, Source::GeoTiff(source)) => {
                source.fetch(header, ranges, cutoff, counters).await
            }
            (UnitFetch::Tiles { .. }, Source::Template(_)) => Err(BuildingError::new(
                ErrorCode::ImageUnavailable,
                "tile ranges planned for a template source (a bug)",
            )),
        }
    }

    /// Decodes a unit's bytes into its images (in `unit.images` order) and keeps them warm.
    /// CPU work: call it from a blocking thread.
    pub fn decode(
        &self,
        unit: &Unit,
        keys: &[String],
        bytes: &[Bytes],
    ) -> Vec<Result<Arc<Image>, BuildingError>> {
        let decoded = match &unit.fetch {
            UnitFetch::Url { url, expected } => vec![self.decode_url(url, &bytes[0], *expected)],
            UnitFetch::Tiles {
                header,
                ranges,
                tiles,
            } => geotiff::decode::unit(header, ranges, bytes, tiles),
        };
        decoded
            .into_iter()
            .zip(&unit.images)
            .map(|(image, &i)| {
                let image = Arc::new(image?);
                self.remember(&keys[i], &image);
                Ok(image)
            })
            .collect()
    }

    /// Decodes the bytes fetched from `url` into an image of the `expected` size. A server
    /// answering another size (a 1×1 placeholder, a retina tile) is resized rather than
    /// failed, but logged: it usually means a misconfigured source.
    fn decode_url(
        &self,
        url: &str,
        bytes: &[u8],
        expected: (u32, u32),
    ) -> Result<Image, BuildingError> {
        let shown = fetch::redact(url);
        let decoded = decode::decode(bytes, expected, &shown)?;
        if let Some((w, h)) = decoded.resized_from {
            tracing::warn!(
                url = %shown,
                got = %format!("{w}x{h}"),
                expected = %format!("{}x{}", expected.0, expected.1),
                "image has an unexpected size; resized"
            );
        }
        Ok(Image::opaque(decoded.image))
    }

    /// Makes a chip from its images (`parts` as the plan placed them). CPU work.
    pub fn compose(
        &self,
        chip: &ChipPlan,
        parts: &[(&Image, i64, i64)],
    ) -> Result<RgbImage, BuildingError> {
        match &chip.compose {
            Compose::Stitch { size } => {
                let rgb: Vec<(&RgbImage, i64, i64)> =
                    parts.iter().map(|(i, x, y)| (&i.rgb, *x, *y)).collect();
                Ok(chip::stitch(&rgb, *size))
            }
            Compose::Warp(layers) => geotiff::warp::compose(layers, parts),
            Compose::Fail(error) => Err(error.clone()),
        }
    }
}

/// Templates: one unit per unique URL, ordered by the first chip that needs it (so chips
/// complete roughly in request order); each chip stitched from its images at their offsets.
fn plan_template(template: &TileTemplate, windows: &[ChipWindow]) -> RequestPlan {
    let mut plan = RequestPlan::default();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for window in windows {
        let mut parts = Vec::new();
        for part in template.plan(window) {
            let expected = (part.width, part.height);
            let i = *index_of.entry(part.url.clone()).or_insert_with(|| {
                plan.images.push(part.url.clone());
                plan.units.push(Unit {
                    images: vec![plan.images.len() - 1],
                    fetch: UnitFetch::Url {
                        url: part.url,
                        expected,
                    },
                });
                plan.images.len() - 1
            });
            parts.push((i, part.dx, part.dy));
        }
        plan.chips.push(ChipPlan {
            parts,
            compose: Compose::Stitch { size: window.size },
        });
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::to_pixel;

    fn imagery(gsd_m: Option<f64>) -> Imagery {
        let fetcher = Fetcher::new(fetch::FetchSettings {
            timeout: std::time::Duration::from_secs(1),
            retries: 0,
            max_bytes: 1024,
            headers: Vec::new(),
            max_connections: 1,
        })
        .unwrap();
        let template = TileTemplate::parse("https://t/{z}/{x}/{y}.png").unwrap();
        Imagery::new(template, fetcher, 19, 64, 0).with_ground_resolution(gsd_m)
    }

    #[test]
    fn chip_gsd_m_picks_the_zoom_at_least_that_fine_and_the_window_of_that_ground_size() {
        let p = LatLon::new(52.2297, 21.0122).unwrap();
        assert_eq!(imagery(None).window(p), ChipWindow::centred_on(p, 19, 64));
        // At 52.23° N: zoom 18 is 0.366 m a pixel, zoom 17 0.732 m.
        let w = imagery(Some(0.5)).window(p);
        assert_eq!(w.zoom, 18);
        let ground = f64::from(w.size) * metres_per_pixel(p.lat, w.zoom);
        assert!(
            (ground - 64.0 * 0.5).abs() <= metres_per_pixel(p.lat, 18) / 2.0,
            "{ground} m"
        );
        let (x, y) = to_pixel(p, w.zoom);
        let (cx, cy) = w.centre();
        assert!((cx - x).abs() <= 0.5 && (cy - y).abs() <= 0.5);
        // The coarsest allowed (1 km a pixel): zoom 7 here (749 m; zoom 6 is 1,497 m).
        let coarse = imagery(Some(1000.0)).window(p).zoom;
        assert!(
            metres_per_pixel(p.lat, coarse) <= 1000.0
                && metres_per_pixel(p.lat, coarse - 1) > 1000.0
        );
        // Exactly a zoom's resolution: that zoom, CHIP_SIZE pixels.
        let exact = imagery(Some(metres_per_pixel(p.lat, 17))).window(p);
        assert_eq!((exact.zoom, exact.size), (17, 64));
    }
}
