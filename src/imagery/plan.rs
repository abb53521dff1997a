//! One request's imagery work, whatever the source, in the shape the pipeline's assembly runs:
//! the unique images (each fetched or taken from the warm cache once, whatever number of chips
//! share it), the fetch units that bring them (one URL; or byte ranges of a GeoTIFF holding
//! several internal tiles, adjacent ones merged into one request), and how each chip is made
//! from its images (stitched at offsets, or warped from a file's pixel grid).

use std::ops::Range;
use std::sync::Arc;

use crate::error::BuildingError;

use super::geotiff::{Header, warp::Grid};

/// Everything a request's chips need.
#[derive(Debug, Default)]
pub struct RequestPlan {
    /// The unique images, by index: their cache keys.
    pub images: Vec<String>,
    pub units: Vec<Unit>,
    /// One per position, in order.
    pub chips: Vec<ChipPlan>,
}

/// What one fetch brings: the images it yields (by index) and how to get them.
#[derive(Debug, Clone)]
pub struct Unit {
    pub images: Vec<usize>,
    pub fetch: UnitFetch,
}

impl Unit {
    /// What concurrent requests share one fetch by: the unit's image keys (`keys` is the
    /// plan's [`RequestPlan::images`]). A URL for templates; for a GeoTIFF, its run of tiles —
    /// requests whose runs differ (other neighbours merged in) fetch their own.
    pub fn key(&self, keys: &[String]) -> String {
        let mut key = String::new();
        for (n, &i) in self.images.iter().enumerate() {
            if n > 0 {
                key.push('\n');
            }
            key.push_str(&keys[i]);
        }
        key
    }

    /// This unit on its own: its images renumbered `0..n`, with their keys, for work that
    /// outlives the request that planned it (a shared fetch).
    pub fn detached(&self, keys: &[String]) -> (Unit, Vec<String>) {
        let own_keys = self.images.iter().map(|&i| keys[i].clone()).collect();
        let unit = Unit {
            images: (0..self.images.len()).collect(),
            fetch: self.fetch.clone(),
        };
        (unit, own_keys)
    }
}

#[derive(Debug, Clone)]
pub enum UnitFetch {
    /// One URL: an XYZ tile, a static-map or WMS image, of the expected size.
    Url { url: String, expected: (u32, u32) },
    /// Internal tiles of one file: the merged byte ranges to read (one request each), and for
    /// each image, the level and tile and where its data (and mask) bytes lie in the file.
    Tiles {
        header: Arc<Header>,
        ranges: Vec<Range<u64>>,
        tiles: Vec<TileBytes>,
    },
}

/// Where one internal tile's bytes are.
#[derive(Debug, Clone)]
pub struct TileBytes {
    pub level: usize,
    pub data: Range<u64>,
    pub mask: Option<Range<u64>>,
}

/// How one chip is made.
#[derive(Debug)]
pub struct ChipPlan {
    /// (image index, x, y): where the image's top-left pixel lands in the chip (stitching),
    /// or its tile's top-left pixel in the level (warping).
    pub parts: Vec<(usize, i64, i64)>,
    pub compose: Compose,
}

#[derive(Debug)]
pub enum Compose {
    /// Paste the parts into a `size`×`size` chip (pixels no part covers stay black).
    Stitch { size: u32 },
    /// Sample each layer's file through its grid; a pixel comes from the first layer with data
    /// there (a mosaic's chip may span files).
    Warp(Vec<Layer>),
    /// Known before any fetch: no file covers the building, its file cannot be read, ….
    Fail(BuildingError),
}

/// One file's part of a warped chip: its parts are `ChipPlan::parts[parts]`.
#[derive(Debug)]
pub struct Layer {
    pub header: Arc<Header>,
    pub grid: Grid,
    pub parts: Range<usize>,
}

impl ChipPlan {
    pub fn failed(error: BuildingError) -> Self {
        Self {
            parts: Vec::new(),
            compose: Compose::Fail(error),
        }
    }
}
