//! GeoTIFF sources: one (cloud-optimized) GeoTIFF, or a mosaic index of many, read by byte
//! ranges from S3, HTTP(S) or disk, in any CRS proj4rs knows.
//!
//! `location` names files; `read` fetches byte ranges (and a header in few requests); `header`
//! reads and checks a file's directories once per sandbox (async-tiff parses them); `index`
//! finds the files covering a building; `warp` maps chip pixels into a file's pixels and
//! composes the chip; `decode` turns a tile's bytes into pixels; `ranges` merges adjacent
//! tiles' bytes into one request. This module plans a request: which internal tiles its chips
//! need (each once, cached ones from the warm cache).

pub mod crs;
pub mod decode;
pub mod header;
pub mod index;
pub mod location;
pub mod ranges;
pub mod read;
pub mod warp;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::plan::{ChipPlan, Compose, Layer, RequestPlan, TileBytes, Unit, UnitFetch};
use crate::error::{BuildingError, ErrorCode};
use crate::geo::{ChipWindow, LatLon, from_pixel};
pub use header::Header;
use index::MosaicIndex;
pub use location::Location;
use ranges::{merge, ranges_of};
use read::{Counters, HeaderFetch, RangeReader};
use warp::Grid;

/// Headers kept per sandbox: a mosaic's files are opened as buildings need them. A COG's
/// header is a few KiB; the byte bound keeps a mosaic of unusually large ones in check.
const HEADER_CACHE: usize = 512;
const HEADER_CACHE_BYTES: u64 = 64 << 20;
/// Files a mosaic chip may be read from: the one containing the building and up to this many
/// less one neighbours, for the pixels it lacks.
const MAX_LAYERS: usize = 4;

/// Which files there are.
enum Files {
    Single(Arc<Header>),
    Mosaic {
        index: Location,
        mosaic: MosaicIndex,
    },
}

/// A GeoTIFF source; one per sandbox.
pub struct GeoTiffSource {
    files: Files,
    reader: Arc<RangeReader>,
    headers: Mutex<LruCache<Location, Arc<Header>>>,
    bands: Option<[u16; 3]>,
    /// The largest request (`MAX_IMAGE_BYTES`): merged ranges stay within it.
    max_request: u64,
}

/// Opens `TILE_URL`'s GeoTIFF (reading its header) or mosaic index (reading the index; files
/// are opened as buildings need them), within `timeout`. The error names the file.
pub async fn open(
    location: Location,
    mosaic: bool,
    reader: Arc<RangeReader>,
    bands: Option<[u16; 3]>,
    max_request: u64,
    timeout: std::time::Duration,
) -> Result<GeoTiffSource, String> {
    let cutoff = Instant::now() + timeout;
    if !mosaic {
        return GeoTiffSource::single(location, reader, bands, max_request, cutoff).await;
    }
    let bytes = match &location {
        Location::S3 { bucket, key } => {
            let uri = crate::blob::BlobUri::S3 {
                bucket: bucket.clone(),
                key: key.clone(),
            };
            crate::blob::load(&uri, "mosaic index", timeout)
                .await?
                .bytes
        }
        Location::File(path) => {
            crate::blob::load(
                &crate::blob::BlobUri::File(path.clone()),
                "mosaic index",
                timeout,
            )
            .await?
            .bytes
        }
        Location::Http(_) => reader
            .read(&location, 0..max_request, cutoff, &Counters::default())
            .await
            .map_err(|e| format!("cannot load mosaic index: {}", e.message))?,
    };
    GeoTiffSource::mosaic(location, &bytes, reader, bands, max_request)
}

/// What planning needs from the request.
pub struct PlanContext<'a> {
    pub cutoff: Instant,
    pub download_slots: &'a Semaphore,
    pub counters: &'a Arc<Counters>,
    pub cached: &'a (dyn Fn(&str) -> bool + Sync),
}

impl GeoTiffSource {
    /// One file: its header is read now, so a missing or unusable file fails init.
    pub async fn single(
        location: Location,
        reader: Arc<RangeReader>,
        bands: Option<[u16; 3]>,
        max_request: u64,
        cutoff: Instant,
    ) -> Result<Self, String> {
        let fetch = HeaderFetch::new(Arc::clone(&reader), location, cutoff, Arc::default());
        let header = Header::read(&fetch, bands).await.map_err(|e| e.message)?;
        Ok(Self::new(Files::Single(header), reader, bands, max_request))
    }

    /// A mosaic index (already fetched): files are opened as buildings need them.
    pub fn mosaic(
        index: Location,
        bytes: &[u8],
        reader: Arc<RangeReader>,
        bands: Option<[u16; 3]>,
        max_request: u64,
    ) -> Result<Self, String> {
        let mosaic =
            MosaicIndex::parse(&index, bytes).map_err(|e| format!("mosaic index {index}: {e}"))?;
        Ok(Self::new(
            Files::Mosaic { index, mosaic },
            reader,
            bands,
            max_request,
        ))
    }

    fn new(
        files: Files,
        reader: Arc<RangeReader>,
        bands: Option<[u16; 3]>,
        max_request: u64,
    ) -> Self {
        Self {
            files,
            reader,
            headers: Mutex::new(LruCache::new(
                NonZeroUsize::new(HEADER_CACHE).expect("non-zero"),
            )),
            bands,
            max_request,
        }
    }

    /// What the log says at init.
    pub fn describe(&self) -> String {
        match &self.files {
            Files::Single(h) => format!(
                "{}: EPSG:{}, {}x{} px, {} levels, tiles {}x{}",
                h.location,
                h.crs.code(),
                h.levels[0].width,
                h.levels[0].height,
                h.levels.len(),
                h.levels[0].tile_width,
                h.levels[0].tile_height
            ),
            Files::Mosaic { index, mosaic } => {
                format!("mosaic index {index}: {} files", mosaic.files.len())
            }
        }
    }

    pub fn reader(&self) -> &RangeReader {
        &self.reader
    }

    /// The files a building's chip is read from, best first.
    fn files_for(&self, p: LatLon, window: &ChipWindow) -> Result<Vec<Location>, BuildingError> {
        let (index, mosaic) = match &self.files {
            Files::Single(h) => return Ok(vec![h.location.clone()]),
            Files::Mosaic { index, mosaic } => (index, mosaic),
        };
        let size = f64::from(window.size);
        let nw = from_pixel(window.left as f64, window.top as f64, window.zoom);
        let se = from_pixel(
            window.left as f64 + size,
            window.top as f64 + size,
            window.zoom,
        );
        let corners = ([nw.lon, se.lat], [se.lon, nw.lat]);
        let files = mosaic.files_for(p.lat, p.lon, corners, MAX_LAYERS - 1);
        if files.is_empty() {
            return Err(BuildingError::new(
                ErrorCode::NoCoverage,
                format!("no file in the mosaic index {index} covers this building"),
            ));
        }
        Ok(files.into_iter().cloned().collect())
    }

    /// The header of `location`, from the sandbox's cache or read now (under a download slot).
    async fn header(
        &self,
        location: &Location,
        ctx: &PlanContext<'_>,
    ) -> Result<Arc<Header>, BuildingError> {
        if let Files::Single(h) = &self.files {
            return Ok(Arc::clone(h));
        }
        if let Some(h) = self
            .headers
            .lock()
            .ok()
            .and_then(|mut c| c.get(location).cloned())
        {
            return Ok(h);
        }
        let _slot = ctx
            .download_slots
            .acquire()
            .await
            .map_err(|_| BuildingError::deadline_exceeded())?;
        let fetch = HeaderFetch::new(
            Arc::clone(&self.reader),
            location.clone(),
            ctx.cutoff,
            Arc::clone(ctx.counters),
        );
        let header = Header::read(&fetch, self.bands).await?;
        if let Ok(mut cache) = self.headers.lock() {
            cache.put(location.clone(), Arc::clone(&header));
            while cache.iter().map(|(_, h)| h.header_bytes).sum::<u64>() > HEADER_CACHE_BYTES
                && cache.len() > 1
            {
                cache.pop_lru();
            }
        }
        Ok(header)
    }

    /// The plan for chips of `size` pixels over `windows` (one per building at `points`).
    pub async fn plan(
        &self,
        windows: &[ChipWindow],
        points: &[LatLon],
        size: u32,
        ctx: &PlanContext<'_>,
    ) -> RequestPlan {
        let files: Vec<Result<Vec<Location>, BuildingError>> = points
            .iter()
            .zip(windows)
            .map(|(p, w)| self.files_for(*p, w))
            .collect();
        let mut unique: Vec<&Location> = Vec::new();
        for location in files.iter().flatten().flatten() {
            if !unique.contains(&location) {
                unique.push(location);
            }
        }
        let loaded =
            futures_util::future::join_all(unique.iter().map(|l| self.header(l, ctx))).await;
        let headers: HashMap<&Location, Result<Arc<Header>, BuildingError>> =
            unique.into_iter().zip(loaded).collect();

        let mut plan = RequestPlan::default();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut tiles: Vec<(Arc<Header>, TileBytes)> = Vec::new();
        for (window, files) in windows.iter().zip(&files) {
            let files = match files {
                Ok(files) => files,
                Err(e) => {
                    plan.chips.push(ChipPlan::failed(e.clone()));
                    continue;
                }
            };
            let mut parts = Vec::new();
            let mut layers = Vec::new();
            let mut failure = None;
            for (n, location) in files.iter().enumerate() {
                let header = match &headers[location] {
                    Ok(h) => Arc::clone(h),
                    // The building's own file must open; a neighbour that does not is skipped.
                    Err(e) if n == 0 => {
                        failure = Some(e.clone());
                        break;
                    }
                    Err(_) => continue,
                };
                let Some(grid) = Grid::new(window, size, &header) else {
                    continue;
                };
                let level = &header.levels[grid.level];
                let Some(span) = grid.tiles(level) else {
                    continue;
                };
                let first = parts.len();
                for row in span.rows.0..=span.rows.1 {
                    for col in span.cols.0..=span.cols.1 {
                        let key = format!("{}#{}/{col}/{row}", header.location, grid.level);
                        let image = *index_of.entry(key.clone()).or_insert_with(|| {
                            plan.images.push(key);
                            tiles.push((
                                Arc::clone(&header),
                                TileBytes {
                                    level: grid.level,
                                    data: level.tile_range(false, col, row).unwrap_or(0..0),
                                    mask: level.tile_range(true, col, row),
                                },
                            ));
                            plan.images.len() - 1
                        });
                        parts.push((image, i64::from(col), i64::from(row)));
                    }
                }
                layers.push(Layer {
                    header,
                    grid,
                    parts: first..parts.len(),
                });
            }
            plan.chips.push(match failure {
                Some(e) => ChipPlan::failed(e),
                None if layers.is_empty() => ChipPlan::failed(BuildingError::new(
                    ErrorCode::NoCoverage,
                    format!("{} does not cover this building", files[0]),
                )),
                None => ChipPlan {
                    parts,
                    compose: Compose::Warp(layers),
                },
            });
        }
        plan.units = self.units(&plan.images, tiles, ctx.cached);
        plan
    }

    /// Fetch units: a cached tile alone (normally served from the cache), the others merged
    /// per file where their byte ranges are close.
    fn units(
        &self,
        keys: &[String],
        tiles: Vec<(Arc<Header>, TileBytes)>,
        cached: &(dyn Fn(&str) -> bool + Sync),
    ) -> Vec<Unit> {
        let mut units = Vec::new();
        let mut by_file: HashMap<Location, Vec<usize>> = HashMap::new();
        let mut file_order = Vec::new();
        for (i, (header, bytes)) in tiles.iter().enumerate() {
            if cached(&keys[i]) {
                units.push(Unit {
                    images: vec![i],
                    fetch: UnitFetch::Tiles {
                        header: Arc::clone(header),
                        ranges: ranges_of(bytes),
                        tiles: vec![bytes.clone()],
                    },
                });
            } else {
                let entry = by_file.entry(header.location.clone()).or_default();
                if entry.is_empty() {
                    file_order.push(header.location.clone());
                }
                entry.push(i);
            }
        }
        for location in file_order {
            let members = &by_file[&location];
            let header = Arc::clone(&tiles[members[0]].0);
            let ranges_of_tile = |i: usize| ranges_of(&tiles[i].1);
            for (images, ranges) in merge(members, ranges_of_tile, self.max_request) {
                units.push(Unit {
                    fetch: UnitFetch::Tiles {
                        header: Arc::clone(&header),
                        ranges,
                        tiles: images.iter().map(|&i| tiles[i].1.clone()).collect(),
                    },
                    images,
                });
            }
        }
        units.sort_by_key(|u| u.images.iter().min().copied());
        units
    }

    /// Reads a unit's ranges, one request each.
    pub async fn fetch(
        &self,
        header: &Header,
        ranges: &[Range<u64>],
        cutoff: Instant,
        counters: &Counters,
    ) -> Result<Vec<bytes::Bytes>, BuildingError> {
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            let bytes = self
                .reader
                .read(&header.location, range.clone(), cutoff, counters)
                .await?;
            if (bytes.len() as u64) < range.end - range.start {
                return Err(BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!(
                        "{}: bytes {}-{} lie past the end of the file (a damaged or truncated file)",
                        header.location,
                        range.start,
                        range.end - 1
                    ),
                ));
            }
            out.push(bytes);
        }
        Ok(out)
    }
}
