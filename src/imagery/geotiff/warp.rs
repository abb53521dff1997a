//! The chip's pixels from a file in any CRS: each chip pixel's centre (a north-up square of
//! web-mercator pixels around the building) is projected into the file's pixel grid and sampled
//! bilinearly, from the overview level nearest the chip's ground resolution.
//!
//! Projecting all `size²` centres through proj4rs would cost more than decoding; like GDAL's
//! approximate transformer, only a grid of [`NODES`]² points is projected and the positions in
//! between are interpolated (over a chip, a map projection is smooth to far below a pixel).
//!
//! A chip pixel holds data when at least half of its bilinear weight falls on pixels that do
//! (inside the image, not masked, not alpha-transparent, not nodata); its colour is the
//! weighted mean of those. The fraction of chip pixels holding data is the chip's coverage.

use image::RgbImage;

use super::header::{Header, Level};
use crate::error::{BuildingError, ErrorCode};
use crate::geo::{ChipWindow, from_pixel};
use crate::imagery::Image;
use crate::imagery::plan::Layer;

/// A chip with less of its area on data than this is `no_coverage`: a prediction on mostly
/// black pixels would be a guess.
pub const MIN_COVERAGE: f64 = 0.5;

/// Grid lines per side of the projected grid (9 × 9 points for any chip size).
pub const NODES: usize = 8;

/// Where one chip's pixels fall in one level of one file.
#[derive(Debug, Clone)]
pub struct Grid {
    /// Output side in pixels.
    pub size: u32,
    pub level: usize,
    /// `(NODES + 1)²` positions in the level's pixels (corner convention), row by row.
    nodes: Vec<(f64, f64)>,
}

/// The tiles of a level a grid touches: columns `cols.0..=cols.1`, rows `rows.0..=rows.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileSpan {
    pub cols: (u32, u32),
    pub rows: (u32, u32),
}

impl Grid {
    /// The grid of the `size`×`size` chip covering `window`, in the level of `header` nearest
    /// its ground resolution (the coarsest whose pixels are no larger than the chip's).
    /// `None` when the file's CRS cannot take the chip's corners (far outside its area).
    pub fn new(window: &ChipWindow, size: u32, header: &Header) -> Option<Self> {
        let scale = f64::from(window.size) / f64::from(size);
        let mut full = Vec::with_capacity((NODES + 1) * (NODES + 1));
        for v in 0..=NODES {
            for u in 0..=NODES {
                let t = |k: usize| k as f64 / NODES as f64 * f64::from(size) * scale;
                let gx = window.left as f64 + t(u);
                let gy = window.top as f64 + t(v);
                let (x, y) = header.crs.forward(from_pixel(gx, gy, window.zoom))?;
                full.push(header.transform.pixel(x, y));
            }
        }
        // Full-resolution pixels per chip pixel, from the grid's extent across and down.
        let span =
            |a: (f64, f64), b: (f64, f64)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
        let across = span(full[NODES], full[0]) / f64::from(size);
        let down = span(full[NODES * (NODES + 1)], full[0]) / f64::from(size);
        let wanted = across.min(down);
        let level = header
            .levels
            .iter()
            .rposition(|l| l.factor.0.max(l.factor.1) <= wanted * 1.01)
            .unwrap_or(0);
        let (fx, fy) = header.levels[level].factor;
        let nodes = full.into_iter().map(|(c, r)| (c / fx, r / fy)).collect();
        Some(Self { size, level, nodes })
    }

    /// The level position of chip pixel (`i`, `j`)'s centre.
    fn position(&self, i: u32, j: u32) -> (f64, f64) {
        let n = NODES as f64 / f64::from(self.size);
        let (u, v) = ((f64::from(i) + 0.5) * n, (f64::from(j) + 0.5) * n);
        let (u0, v0) = (
            (u.floor() as usize).min(NODES - 1),
            (v.floor() as usize).min(NODES - 1),
        );
        let (fu, fv) = (u - u0 as f64, v - v0 as f64);
        let at = |a: usize, b: usize| self.nodes[b * (NODES + 1) + a];
        let (p00, p10, p01, p11) = (
            at(u0, v0),
            at(u0 + 1, v0),
            at(u0, v0 + 1),
            at(u0 + 1, v0 + 1),
        );
        let lerp = |a: f64, b: f64, c: f64, d: f64| {
            (a * (1.0 - fu) + b * fu) * (1.0 - fv) + (c * (1.0 - fu) + d * fu) * fv
        };
        (
            lerp(p00.0, p10.0, p01.0, p11.0),
            lerp(p00.1, p10.1, p01.1, p11.1),
        )
    }

    /// The tiles holding the pixels the chip samples, or `None` if it misses the image.
    pub fn tiles(&self, level: &Level) -> Option<TileSpan> {
        let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for &(x, y) in &self.nodes {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
        // Bilinear reads the pixels around each centre.
        let (x0, y0) = ((x0 - 1.0).floor().max(0.0), (y0 - 1.0).floor().max(0.0));
        let (x1, y1) = ((x1 + 1.0).ceil(), (y1 + 1.0).ceil());
        let (w, h) = (f64::from(level.width), f64::from(level.height));
        if x1 < 0.0 || y1 < 0.0 || x0 >= w || y0 >= h {
            return None;
        }
        let col = |x: f64| ((x.min(w - 1.0)) as u32) / level.tile_width;
        let row = |y: f64| ((y.min(h - 1.0)) as u32) / level.tile_height;
        Some(TileSpan {
            cols: (col(x0), col(x1)),
            rows: (row(y0), row(y1)),
        })
    }

    /// Samples the chip into `chip` where `filled` is false. `pixel(col, row)` is the level's
    /// pixel there and whether it holds data (`None` outside the tiles read). Marks the chip
    /// pixels it filled.
    pub fn sample(
        &self,
        level: &Level,
        pixel: impl Fn(u32, u32) -> Option<([u8; 3], bool)>,
        chip: &mut RgbImage,
        filled: &mut [bool],
    ) {
        let bounds = (i64::from(level.width), i64::from(level.height));
        match self.translation() {
            Some(offset) => self.copy(offset, bounds, pixel, chip, filled),
            None => self.resample(bounds, pixel, chip, filled),
        }
    }

    /// The level pixel that chip pixel (0, 0) is, when the chip is the level's own pixels
    /// shifted by whole pixels: same CRS, same resolution, aligned grids (a web-optimized COG
    /// at `TILE_ZOOM`). Bilinear sampling then weighs one pixel fully, so a copy is exact.
    fn translation(&self) -> Option<(i64, i64)> {
        const EXACT: f64 = 1e-6;
        let step = f64::from(self.size) / NODES as f64;
        let origin = self.nodes[0];
        let whole = |x: f64| (x - x.round()).abs() < EXACT;
        if !whole(origin.0) || !whole(origin.1) {
            return None;
        }
        for v in 0..=NODES {
            for u in 0..=NODES {
                let (x, y) = self.nodes[v * (NODES + 1) + u];
                let (ex, ey) = (origin.0 + u as f64 * step, origin.1 + v as f64 * step);
                if (x - ex).abs() > EXACT || (y - ey).abs() > EXACT {
                    return None;
                }
            }
        }
        Some((origin.0.round() as i64, origin.1.round() as i64))
    }

    /// [`Grid::sample`] for a whole-pixel shift: each chip pixel is one level pixel.
    fn copy(
        &self,
        (ox, oy): (i64, i64),
        (w, h): (i64, i64),
        pixel: impl Fn(u32, u32) -> Option<([u8; 3], bool)>,
        chip: &mut RgbImage,
        filled: &mut [bool],
    ) {
        for j in 0..self.size {
            let r = oy + i64::from(j);
            if r < 0 || r >= h {
                continue;
            }
            for i in 0..self.size {
                let (c, at) = (ox + i64::from(i), (j * self.size + i) as usize);
                if filled[at] || c < 0 || c >= w {
                    continue;
                }
                if let Some((rgb, true)) = pixel(c as u32, r as u32) {
                    filled[at] = true;
                    chip.put_pixel(i, j, image::Rgb(rgb));
                }
            }
        }
    }

    /// [`Grid::sample`] in general: bilinear from the four pixels around each centre.
    fn resample(
        &self,
        (w, h): (i64, i64),
        pixel: impl Fn(u32, u32) -> Option<([u8; 3], bool)>,
        chip: &mut RgbImage,
        filled: &mut [bool],
    ) {
        for j in 0..self.size {
            for i in 0..self.size {
                let at = (j * self.size + i) as usize;
                if filled[at] {
                    continue;
                }
                let (sx, sy) = self.position(i, j);
                let (x, y) = (sx - 0.5, sy - 0.5);
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let mut sum = [0.0f64; 3];
                let mut weight = 0.0;
                for (dx, dy, wgt) in [
                    (0, 0, (1.0 - fx) * (1.0 - fy)),
                    (1, 0, fx * (1.0 - fy)),
                    (0, 1, (1.0 - fx) * fy),
                    (1, 1, fx * fy),
                ] {
                    let (c, r) = (x0 + dx, y0 + dy);
                    if wgt == 0.0 || c < 0 || r < 0 || c >= w || r >= h {
                        continue;
                    }
                    if let Some((rgb, true)) = pixel(c as u32, r as u32) {
                        for k in 0..3 {
                            sum[k] += wgt * f64::from(rgb[k]);
                        }
                        weight += wgt;
                    }
                }
                if weight >= 0.5 - 1e-9 {
                    filled[at] = true;
                    let px = sum.map(|s| (s / weight).round().clamp(0.0, 255.0) as u8);
                    chip.put_pixel(i, j, image::Rgb(px));
                }
            }
        }
    }
}

/// Makes a chip from its layers' tiles: samples each layer where the ones before it left no
/// data, then checks the coverage.
pub fn compose(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A grid whose chip pixel (i, j) centre sits at `origin + (i, j) · scale + ½ · scale` in
    /// the level.
    fn grid(size: u32, origin: (f64, f64), scale: f64) -> Grid {
        let step = f64::from(size) / NODES as f64 * scale;
        let nodes = (0..=NODES)
            .flat_map(|v| {
                (0..=NODES).map(move |u| (origin.0 + u as f64 * step, origin.1 + v as f64 * step))
            })
            .collect();
        Grid {
            size,
            level: 0,
            nodes,
        }
    }

    /// A 100×80 level with a pattern, no data in one corner, and nothing past its edges.
    fn level_pixel(c: u32, r: u32) -> Option<([u8; 3], bool)> {
        let rgb = [
            (c * 7 % 256) as u8,
            (r * 11 % 256) as u8,
            ((c + r) % 256) as u8,
        ];
        Some((rgb, !(c < 10 && r < 10)))
    }

    fn run(grid: &Grid, copy: bool) -> (RgbImage, Vec<bool>) {
        let size = grid.size;
        let mut chip = RgbImage::new(size, size);
        let mut filled = vec![false; (size * size) as usize];
        match (copy, grid.translation()) {
            (true, Some(offset)) => {
                grid.copy(offset, (100, 80), level_pixel, &mut chip, &mut filled)
            }
            (true, None) => panic!("not a whole-pixel shift"),
            (false, _) => grid.resample((100, 80), level_pixel, &mut chip, &mut filled),
        }
        (chip, filled)
    }

    #[test]
    fn an_aligned_grid_is_copied_exactly_as_bilinear_sampling_would_make_it() {
        // Inside, across the no-data corner, and hanging past the level's edges.
        for origin in [(20.0, 30.0), (-5.0, 3.0), (90.0, 70.0)] {
            let aligned = grid(32, origin, 1.0);
            assert_eq!(
                aligned.translation(),
                Some((origin.0 as i64, origin.1 as i64))
            );
            assert_eq!(run(&aligned, true), run(&aligned, false), "{origin:?}");
        }
    }

    #[test]
    fn shifted_or_scaled_grids_are_resampled() {
        assert_eq!(grid(32, (20.5, 30.0), 1.0).translation(), None);
        assert_eq!(grid(32, (20.0, 30.0), 0.5).translation(), None);
        let mut bent = grid(32, (20.0, 30.0), 1.0);
        bent.nodes[40].0 += 0.01;
        assert_eq!(bent.translation(), None);
    }
}
