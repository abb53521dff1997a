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
#[derive(Debug)]
pub struct Unit {
    pub images: Vec<usize>,
    pub fetch: UnitFetch,
}

#[derive(Debug)]
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
