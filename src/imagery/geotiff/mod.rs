//! GeoTIFF sources: one (cloud-optimized) GeoTIFF, or a mosaic index of many, read by byte
//! ranges from S3, HTTP(S) or disk, in any CRS proj4rs knows.
//!
//! `location` names files; `read` fetches byte ranges (and a header in few requests); `header`
//! reads and checks a file's directories once per sandbox (async-tiff parses them); `index`
//! finds the file covering a building; `warp` maps chip pixels into a file's pixels; `decode`
//! turns a tile's bytes into pixels. This module plans a request: which internal tiles its
//! chips need (each once, cached ones from the warm cache, adjacent ones in one request).

pub mod crs;
pub mod decode;
pub mod header;
pub mod index;
pub mod location;
pub mod read;
pub mod warp;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::Image;
use super::plan::{ChipPlan, Compose, Layer, RequestPlan, TileBytes, Unit, UnitFetch};
use crate::error::{BuildingError, ErrorCode};
use crate::geo::{ChipWindow, LatLon, from_pixel};
pub use header::Header;
use index::MosaicIndex;
pub use location::Location;
use read::{Counters, HeaderFetch, RangeReader};
use warp::Grid;

/// Headers kept per sandbox: a mosaic's files are opened as buildings need them. A COG's
/// header is a few KiB; the byte bound keeps a mosaic of unusually large ones in check.
const HEADER_CACHE: usize = 512;
const HEADER_CACHE_BYTES: u64 = 64 << 20;
/// Ranges closer than this are read in one request: a few KiB more is cheaper than a request.
const MERGE_GAP: u64 = 16 * 1024;
/// Files a mosaic chip may be read from: the one containing the building and up to this many
/// less one neighbours, for the pixels it lacks.
const MAX_LAYERS: usize = 4;
/// A chip with less of its area on data than this is `no_coverage`: a prediction on mostly
/// black pixels would be a guess.
pub const MIN_COVERAGE: f64 = 0.5;

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
            for (images, ranges) in merge(members, &tiles, self.max_request) {
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

/// The ranges holding a tile's bytes (its data, and its mask if any); empty tiles have none.
fn ranges_of(t: &TileBytes) -> Vec<Range<u64>> {
    std::iter::once(t.data.clone())
        .chain(t.mask.clone())
        .filter(|r| r.end > r.start)
        .collect()
}

/// Groups `members` (indexes into `tiles`, all of one file) into units: ranges closer than
/// [`MERGE_GAP`] are merged (up to `max_request` bytes), and tiles sharing a merged range end
/// up in one unit.
fn merge(
    members: &[usize],
    tiles: &[(Arc<Header>, TileBytes)],
    max_request: u64,
) -> Vec<(Vec<usize>, Vec<Range<u64>>)> {
    let mut pieces: Vec<(Range<u64>, usize)> = members
        .iter()
        .flat_map(|&i| ranges_of(&tiles[i].1).into_iter().map(move |r| (r, i)))
        .collect();
    pieces.sort_by_key(|(r, _)| (r.start, r.end));
    // Union-find over tiles.
    let mut parent: HashMap<usize, usize> = members.iter().map(|&i| (i, i)).collect();
    fn root(parent: &mut HashMap<usize, usize>, mut i: usize) -> usize {
        while parent[&i] != i {
            let up = parent[&parent[&i]];
            parent.insert(i, up);
            i = up;
        }
        i
    }
    let mut merged: Vec<(Range<u64>, usize)> = Vec::new();
    for (range, tile) in pieces {
        if let Some((last, owner)) = merged.last_mut()
            && range.start <= last.end + MERGE_GAP
            && range.end.max(last.end) - last.start <= max_request
        {
            last.end = last.end.max(range.end);
            let (a, b) = (root(&mut parent, *owner), root(&mut parent, tile));
            parent.insert(a, b);
            *owner = b;
            continue;
        }
        merged.push((range, tile));
    }
    let mut groups: HashMap<usize, (Vec<usize>, Vec<Range<u64>>)> = HashMap::new();
    for &i in members {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().0.push(i);
    }
    for (range, owner) in merged {
        let r = root(&mut parent, owner);
        groups.entry(r).or_default().1.push(range);
    }
    // Tiles with no bytes (sparse files) still need a unit to be delivered (as empty tiles).
    let mut out: Vec<_> = groups.into_values().collect();
    out.sort_by_key(|(images, _)| images.iter().min().copied());
    out
}

/// Decodes every tile of a fetched unit. CPU work: call it from a blocking thread.
pub fn decode_tiles(
    header: &Header,
    ranges: &[Range<u64>],
    bytes: &[bytes::Bytes],
    tiles: &[TileBytes],
) -> Vec<Result<Image, BuildingError>> {
    let slice = |r: &Range<u64>| -> Option<&[u8]> {
        ranges.iter().zip(bytes).find_map(|(have, b)| {
            (have.start <= r.start && r.end <= have.end)
                .then(|| &b[(r.start - have.start) as usize..(r.end - have.start) as usize])
        })
    };
    tiles
        .iter()
        .map(|t| {
            let level = &header.levels[t.level];
            if t.data.end <= t.data.start {
                // A sparse tile: GDAL writes none for areas without data.
                return Ok(Image::empty(level.tile_width, level.tile_height));
            }
            let data = slice(&t.data);
            let mask = t.mask.as_ref().and_then(slice);
            let data = data.ok_or_else(|| {
                BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!("{}: a tile's bytes were not read (a bug)", header.location),
                )
            })?;
            decode::tile(header, level, data, mask).map_err(|why| {
                BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!(
                        "{}: level {} tile at bytes {}-{}: {why}",
                        header.location,
                        t.level,
                        t.data.start,
                        t.data.end - 1
                    ),
                )
            })
        })
        .collect()
}

/// Makes a chip from its layers' tiles: samples each layer where the ones before it left no
/// data, then checks the coverage.
pub fn warp(
    layers: &[Layer],
    parts: &[(&Image, i64, i64)],
) -> Result<image::RgbImage, BuildingError> {
    let Some(size) = layers.first().map(|l| l.grid.size) else {
        return Err(BuildingError::new(
            ErrorCode::NoCoverage,
            "no file covers this building",
        ));
    };
    let mut chip = image::RgbImage::new(size, size);
    let mut filled = vec![false; (size * size) as usize];
    for layer in layers {
        let level = &layer.header.levels[layer.grid.level];
        let (tw, th) = (level.tile_width, level.tile_height);
        // The layer's tiles in a small dense grid: a lookup per sampled pixel, four per chip
        // pixel, must not hash.
        let mine = &parts[layer.parts.clone()];
        let (c0, r0) = (
            mine.iter().map(|p| p.1).min().unwrap_or(0),
            mine.iter().map(|p| p.2).min().unwrap_or(0),
        );
        let across = mine.iter().map(|p| p.1).max().unwrap_or(0) - c0 + 1;
        let down = mine.iter().map(|p| p.2).max().unwrap_or(0) - r0 + 1;
        let mut tiles: Vec<Option<&Image>> = vec![None; (across * down) as usize];
        for &(image, col, row) in mine {
            tiles[((row - r0) * across + (col - c0)) as usize] = Some(image);
        }
        let pixel = |c: u32, r: u32| {
            let (col, row) = (i64::from(c / tw) - c0, i64::from(r / th) - r0);
            if col < 0 || row < 0 || col >= across || row >= down {
                return None;
            }
            let tile = tiles[(row * across + col) as usize]?;
            let (x, y) = (c % tw, r % th);
            let px = tile.rgb.get_pixel_checked(x, y)?.0;
            let valid = tile
                .valid
                .as_ref()
                .is_none_or(|m| m.get_pixel(x, y).0[0] > 0);
            Some((px, valid))
        };
        layer.grid.sample(level, pixel, &mut chip, &mut filled);
    }
    let coverage = filled.iter().filter(|f| **f).count() as f64 / filled.len() as f64;
    if coverage < MIN_COVERAGE {
        let files: Vec<String> = layers
            .iter()
            .map(|l| l.header.location.to_string())
            .collect();
        return Err(BuildingError::new(
            ErrorCode::NoCoverage,
            format!(
                "{} has data for {:.0} % of this building's chip (at least {:.0} % needed)",
                files.join(" + "),
                coverage * 100.0,
                MIN_COVERAGE * 100.0
            ),
        ));
    }
    Ok(chip)
}
