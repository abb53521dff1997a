//! Web-mercator (EPSG:3857) math: latitude/longitude ↔ global pixel coordinates at a zoom, and
//! the square of pixels a chip covers. Pure functions only; no I/O.
//!
//! Global pixels follow the XYZ tile convention: the world at zoom `z` is `256 · 2^z` pixels
//! square, x grows east from the antimeridian, y grows south from ~85.05° N.

use std::f64::consts::PI;

/// Tile side in pixels for XYZ/TMS/quadkey services.
pub const TILE_SIZE: u32 = 256;
/// The latitude where web mercator's square world ends.
pub const MAX_LATITUDE: f64 = 85.051_128_779_806_6;
/// Half the world's width in EPSG:3857 metres.
pub const ORIGIN_SHIFT_M: f64 = 20_037_508.342_789_244;

/// A building position in degrees (WGS 84).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

impl LatLon {
    /// Checks that both values are finite and inside web mercator's range.
    pub fn new(lat: f64, lon: f64) -> Result<Self, String> {
        if !lat.is_finite() || !lon.is_finite() {
            return Err(format!("lat {lat} / lon {lon} must be finite numbers"));
        }
        if lat.abs() > MAX_LATITUDE {
            return Err(format!(
                "lat {lat} is outside -85.0511..85.0511 (web mercator)"
            ));
        }
        if lon.abs() > 180.0 {
            return Err(format!("lon {lon} is outside -180..180"));
        }
        Ok(Self { lat, lon })
    }
}

/// World size in pixels at `zoom`.
pub fn world_pixels(zoom: u8) -> f64 {
    f64::from(TILE_SIZE) * 2f64.powi(i32::from(zoom))
}

/// Global pixel position (fractional) of a point at `zoom`.
pub fn to_pixel(p: LatLon, zoom: u8) -> (f64, f64) {
    let world = world_pixels(zoom);
    let x = (p.lon + 180.0) / 360.0 * world;
    let lat = p.lat.to_radians();
    let y = (1.0 - (lat.tan() + 1.0 / lat.cos()).ln() / PI) / 2.0 * world;
    (x, y)
}

/// The point at a global pixel position (inverse of [`to_pixel`]).
pub fn from_pixel(x: f64, y: f64, zoom: u8) -> LatLon {
    let world = world_pixels(zoom);
    let lon = x / world * 360.0 - 180.0;
    let lat = (PI * (1.0 - 2.0 * y / world)).sinh().atan().to_degrees();
    LatLon { lat, lon }
}

/// Ground resolution of one pixel at `zoom` and `lat`, in metres.
pub fn metres_per_pixel(lat: f64, zoom: u8) -> f64 {
    2.0 * ORIGIN_SHIFT_M * lat.to_radians().cos() / world_pixels(zoom)
}

/// The square of global pixels `[left, left + size) × [top, top + size)` a chip covers.
///
/// The chip's centre pixel boundary is the building's pixel rounded to the nearest
/// grid line, so the building sits within half a pixel of the chip's centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChipWindow {
    pub left: i64,
    pub top: i64,
    pub size: u32,
    pub zoom: u8,
}

impl ChipWindow {
    pub fn centred_on(p: LatLon, zoom: u8, size: u32) -> Self {
        let (x, y) = to_pixel(p, zoom);
        let half = f64::from(size) / 2.0;
        Self {
            left: (x - half).round() as i64,
            top: (y - half).round() as i64,
            size,
            zoom,
        }
    }

    /// The window's centre in global pixels.
    pub fn centre(&self) -> (f64, f64) {
        let half = f64::from(self.size) / 2.0;
        (self.left as f64 + half, self.top as f64 + half)
    }

    /// EPSG:3857 bounds `(minx, miny, maxx, maxy)` in metres, for WMS `{bbox}`.
    pub fn bbox_3857(&self) -> (f64, f64, f64, f64) {
        let m = 2.0 * ORIGIN_SHIFT_M / world_pixels(self.zoom);
        let minx = self.left as f64 * m - ORIGIN_SHIFT_M;
        let maxx = (self.left + i64::from(self.size)) as f64 * m - ORIGIN_SHIFT_M;
        let maxy = ORIGIN_SHIFT_M - self.top as f64 * m;
        let miny = ORIGIN_SHIFT_M - (self.top + i64::from(self.size)) as f64 * m;
        (minx, miny, maxx, maxy)
    }

    /// The XYZ tiles the window overlaps, with where each tile's top-left corner falls in
    /// the chip. `x` wraps around the antimeridian; rows outside the world are left out
    /// (those chip pixels stay black).
    pub fn tiles(&self) -> Vec<TilePlacement> {
        let tile = i64::from(TILE_SIZE);
        let n = 1i64 << self.zoom;
        let right = self.left + i64::from(self.size) - 1;
        let bottom = self.top + i64::from(self.size) - 1;
        let mut out = Vec::new();
        for ty in self.top.div_euclid(tile)..=bottom.div_euclid(tile) {
            if !(0..n).contains(&ty) {
                continue;
            }
            for tx in self.left.div_euclid(tile)..=right.div_euclid(tile) {
                out.push(TilePlacement {
                    tile: Tile {
                        z: self.zoom,
                        x: tx.rem_euclid(n) as u32,
                        y: ty as u32,
                    },
                    dx: tx * tile - self.left,
                    dy: ty * tile - self.top,
                });
            }
        }
        out
    }
}

/// One XYZ tile address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tile {
    pub z: u8,
    pub x: u32,
    pub y: u32,
}

impl Tile {
    /// TMS row numbering (y counted from the south).
    pub fn tms_y(&self) -> u32 {
        (1u32 << self.z) - 1 - self.y
    }

    /// Bing-style quadkey.
    pub fn quadkey(&self) -> String {
        (1..=self.z)
            .rev()
            .map(|i| {
                let mask = 1u32 << (i - 1);
                let digit = u8::from(self.x & mask != 0) + 2 * u8::from(self.y & mask != 0);
                char::from(b'0' + digit)
            })
            .collect()
    }
}

/// A tile and the chip coordinates of its top-left pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TilePlacement {
    pub tile: Tile,
    pub dx: i64,
    pub dy: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tile_of_warsaw_at_zoom_19() {
        // Palace of Culture, Warsaw: tile 19/292736/172630 by the OSM slippy-map formula
        // (x = (lon+180)/360·2^z, y = (1 − asinh(tan φ)/π)/2·2^z), computed independently.
        let (x, y) = to_pixel(LatLon::new(52.2318, 21.0060).unwrap(), 19);
        assert_eq!(((x / 256.0) as u32, (y / 256.0) as u32), (292_736, 172_630));
    }

    #[test]
    fn pixel_round_trip_is_exact_to_a_micro_degree() {
        for &(lat, lon) in &[
            (0.0, 0.0),
            (52.2297, 21.0122),
            (-33.86, 151.2),
            (85.0, -179.9),
            (-85.0, 179.9),
        ] {
            let p = LatLon::new(lat, lon).unwrap();
            let (x, y) = to_pixel(p, 19);
            let back = from_pixel(x, y, 19);
            assert!(
                (back.lat - lat).abs() < 1e-9 && (back.lon - lon).abs() < 1e-9,
                "{lat},{lon} -> {back:?}"
            );
        }
    }

    #[test]
    fn coordinates_outside_web_mercator_are_rejected() {
        assert!(LatLon::new(95.0, 0.0).is_err());
        assert!(LatLon::new(85.06, 0.0).is_err());
        assert!(LatLon::new(0.0, 180.5).is_err());
        assert!(LatLon::new(f64::NAN, 0.0).is_err());
        assert!(LatLon::new(0.0, f64::INFINITY).is_err());
        assert!(LatLon::new(-85.05, -180.0).is_ok());
    }

    #[test]
    fn window_is_centred_on_the_point() {
        let p = LatLon::new(52.2297, 21.0122).unwrap();
        let w = ChipWindow::centred_on(p, 19, 64);
        let (px, py) = to_pixel(p, 19);
        let (cx, cy) = w.centre();
        assert!((cx - px).abs() <= 0.5 && (cy - py).abs() <= 0.5);
    }

    #[test]
    fn a_window_inside_one_tile_needs_one_tile_and_a_straddling_one_four() {
        let inside = ChipWindow {
            left: 256 * 10 + 20,
            top: 256 * 7 + 30,
            size: 64,
            zoom: 5,
        };
        let tiles = inside.tiles();
        assert_eq!(tiles.len(), 1);
        assert_eq!(
            (tiles[0].tile.x, tiles[0].tile.y, tiles[0].dx, tiles[0].dy),
            (10, 7, -20, -30)
        );

        let corner = ChipWindow {
            left: 256 * 11 - 16,
            top: 256 * 8 - 16,
            size: 32,
            zoom: 5,
        };
        let placed: Vec<_> = corner
            .tiles()
            .iter()
            .map(|t| (t.tile.x, t.tile.y, t.dx, t.dy))
            .collect();
        assert_eq!(
            placed,
            vec![
                (10, 7, -240, -240),
                (11, 7, 16, -240),
                (10, 8, -240, 16),
                (11, 8, 16, 16)
            ]
        );
    }

    #[test]
    fn windows_wrap_at_the_antimeridian_and_clip_at_the_poles() {
        let w = ChipWindow {
            left: -10,
            top: -10,
            size: 32,
            zoom: 2,
        };
        let placed: Vec<_> = w
            .tiles()
            .iter()
            .map(|t| (t.tile.x, t.tile.y, t.dx))
            .collect();
        assert_eq!(placed, vec![(3, 0, -246), (0, 0, 10)]);
    }

    #[test]
    fn tms_and_quadkey_addresses() {
        let t = Tile { z: 3, x: 3, y: 5 };
        assert_eq!(t.tms_y(), 2);
        assert_eq!(t.quadkey(), "213");
        assert_eq!(Tile { z: 0, x: 0, y: 0 }.quadkey(), "");
    }

    #[test]
    fn bbox_of_the_whole_world_at_zoom_0() {
        let w = ChipWindow {
            left: 0,
            top: 0,
            size: 256,
            zoom: 0,
        };
        let (minx, miny, maxx, maxy) = w.bbox_3857();
        assert!((minx + ORIGIN_SHIFT_M).abs() < 1e-6 && (maxx - ORIGIN_SHIFT_M).abs() < 1e-6);
        assert!((miny + ORIGIN_SHIFT_M).abs() < 1e-6 && (maxy - ORIGIN_SHIFT_M).abs() < 1e-6);
    }

    #[test]
    fn ground_resolution_at_the_equator_zoom_19() {
        assert!((metres_per_pixel(0.0, 19) - 0.298_582_141_647).abs() < 1e-9);
    }
}
