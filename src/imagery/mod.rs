//! Imagery: from a building's position to the decoded images its chip needs.
//!
//! `template` turns `TILE_URL` into URLs, `fetch` gets bytes, `decode` makes RGB8 images,
//! `chip` stitches them, `cache` keeps them warm across invocations, and `flight` makes
//! concurrent requests for one image share a single fetch and decode. The pipeline's assembly
//! decides when each step runs (sharing images between chips); this module only knows how.

pub mod cache;
pub mod chip;
pub mod decode;
pub mod fetch;
pub mod flight;
pub mod template;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use image::RgbImage;
use tokio::time::Instant;

use crate::error::BuildingError;
use crate::geo::{ChipWindow, LatLon};
use cache::ImageCache;
use fetch::Fetcher;
use flight::{Flights, Joined};
use template::{ImagePart, TileTemplate};

/// An image fetched and decoded once for every request waiting for it, and the decoding time.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub image: Result<Arc<RgbImage>, BuildingError>,
    pub decode: Duration,
}

/// Everything needed to turn positions into chip images; one per sandbox.
pub struct Imagery {
    template: TileTemplate,
    fetcher: Fetcher,
    cache: Option<Mutex<ImageCache>>,
    /// Images being fetched and decoded, by URL.
    flights: Flights<Loaded>,
    zoom: u8,
    chip_size: u32,
}

impl Imagery {
    pub fn new(
        template: TileTemplate,
        fetcher: Fetcher,
        zoom: u8,
        chip_size: u32,
        cache_bytes: usize,
    ) -> Self {
        Self {
            template,
            fetcher,
            cache: (cache_bytes > 0).then(|| Mutex::new(ImageCache::new(cache_bytes))),
            flights: Flights::new(),
            zoom,
            chip_size,
        }
    }

    /// Chip side in source pixels (before resizing to the model's input).
    pub fn chip_size(&self) -> u32 {
        self.chip_size
    }

    /// The square of source pixels the chip centred on `p` covers. Positions with the same
    /// window get the same chip.
    pub fn window(&self, p: LatLon) -> ChipWindow {
        ChipWindow::centred_on(p, self.zoom, self.chip_size)
    }

    /// The images the chip centred on `p` needs, with their placement.
    pub fn plan(&self, p: LatLon) -> Vec<ImagePart> {
        self.template.plan(&self.window(p))
    }

    pub fn cached(&self, url: &str) -> Option<Arc<RgbImage>> {
        self.cache.as_ref()?.lock().ok()?.get(url)
    }

    /// The image at `url` from the warm cache, else a seat on the one fetch of it in flight,
    /// started with `load()` when no other request has started it. `load` must keep what it
    /// decodes ([`Imagery::decode`] does), so no request misses both the cache and the flight.
    pub fn cached_or_join<F>(
        &self,
        url: &str,
        load: impl FnOnce() -> F,
    ) -> Joined<Arc<RgbImage>, Loaded>
    where
        F: Future<Output = Loaded> + Send + 'static,
    {
        self.flights.join_unless(url, || self.cached(url), load)
    }

    pub fn remember(&self, url: &str, image: &Arc<RgbImage>) {
        if let Some(cache) = &self.cache
            && let Ok(mut cache) = cache.lock()
        {
            cache.put(url.to_string(), Arc::clone(image));
        }
    }

    pub async fn fetch(&self, url: &str, cutoff: Instant) -> Result<Bytes, BuildingError> {
        self.fetcher.fetch(url, cutoff).await
    }

    /// Decodes the bytes fetched from `url` into an image of the `expected` size, and keeps it
    /// warm. A server answering another size (a 1×1 placeholder, a retina tile) is resized
    /// rather than failed, but logged: it usually means a misconfigured source. CPU work: call
    /// it from a blocking thread.
    pub fn decode(
        &self,
        url: &str,
        bytes: &[u8],
        expected: (u32, u32),
    ) -> Result<Arc<RgbImage>, BuildingError> {
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
        let image = Arc::new(decoded.image);
        self.remember(url, &image);
        Ok(image)
    }
}
