//! A file's coordinate reference system and the one conversion chips need: WGS 84 degrees →
//! the file's coordinates. Web mercator and plain longitude/latitude are computed directly;
//! every other EPSG code goes through `proj4rs` (pure Rust, so no PROJ or GDAL library ships
//! with the function), with the definitions of `crs-definitions`.

use proj4rs::Proj;

use crate::geo::LatLon;

/// The EPSG codes of web mercator (EPSG:3857 and its older aliases).
const WEB_MERCATOR: [u16; 2] = [3857, 3785];
/// Longitude/latitude on WGS 84 (or datums within a metre of it at chip scale).
const WGS84: u16 = 4326;
/// GeoTIFF's code for "user-defined" (parameters in the keys, no EPSG code).
pub const USER_DEFINED: u16 = 32767;

pub enum Crs {
    WebMercator,
    LonLat,
    Proj {
        code: u16,
        wgs84: Box<Proj>,
        proj: Box<Proj>,
    },
}

impl std::fmt::Debug for Crs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EPSG:{}", self.code())
    }
}

impl Crs {
    /// The CRS of EPSG `code`, or why it cannot be used (the caller names the file).
    pub fn from_epsg(code: u16) -> Result<Self, String> {
        if WEB_MERCATOR.contains(&code) {
            return Ok(Self::WebMercator);
        }
        if code == WGS84 {
            return Ok(Self::LonLat);
        }
        let advice = "reproject it, e.g. `gdalwarp -t_srs EPSG:3857 -of COG in.tif out.tif`";
        if code == USER_DEFINED {
            return Err(format!(
                "its CRS is user-defined (no EPSG code in its GeoKeys), which is not supported: {advice}"
            ));
        }
        let proj = Proj::from_epsg_code(code).map_err(|e| {
            format!("EPSG:{code} is not a CRS this function can use ({e}): {advice}")
        })?;
        let wgs84 = Proj::from_epsg_code(WGS84).map_err(|e| format!("EPSG:4326: {e}"))?;
        Ok(Self::Proj {
            code,
            wgs84: Box::new(wgs84),
            proj: Box::new(proj),
        })
    }

    pub fn code(&self) -> u16 {
        match self {
            Self::WebMercator => 3857,
            Self::LonLat => WGS84,
            Self::Proj { code, .. } => *code,
        }
    }

    /// `p` in the file's coordinates (metres east/north, or degrees lon/lat), `None` where the
    /// projection is undefined.
    pub fn forward(&self, p: LatLon) -> Option<(f64, f64)> {
        let xy = match self {
            Self::WebMercator => {
                let r = 6_378_137.0;
                let lat = p.lat.to_radians();
                (
                    r * p.lon.to_radians(),
                    r * (std::f64::consts::FRAC_PI_4 + lat / 2.0).tan().ln(),
                )
            }
            Self::LonLat => (p.lon, p.lat),
            Self::Proj { wgs84, proj, .. } => {
                let mut point = (p.lon.to_radians(), p.lat.to_radians(), 0.0);
                proj4rs::transform::transform(wgs84, proj, &mut point).ok()?;
                if proj.is_latlong() {
                    (point.0.to_degrees(), point.1.to_degrees())
                } else {
                    (point.0, point.1)
                }
            }
        };
        (xy.0.is_finite() && xy.1.is_finite()).then_some(xy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Warsaw's Palace of Culture in EPSG:2180, UTM 34N and web mercator, as GDAL 3.10's PROJ
    /// (rasterio.warp.transform) gives them.
    #[test]
    fn known_points_in_national_and_utm_grids() {
        let p = LatLon::new(52.231_8, 21.006).unwrap();
        let puwg = Crs::from_epsg(2180).unwrap().forward(p).unwrap();
        assert!(
            (puwg.0 - 636_952.48).abs() < 0.01 && (puwg.1 - 486_978.94).abs() < 0.01,
            "{puwg:?}"
        );
        let utm = Crs::from_epsg(32634).unwrap().forward(p).unwrap();
        assert!(
            (utm.0 - 500_409.77).abs() < 0.01 && (utm.1 - 5_786_820.20).abs() < 0.01,
            "{utm:?}"
        );
        let merc = Crs::from_epsg(3857).unwrap().forward(p).unwrap();
        assert!(
            (merc.0 - 2_338_377.22).abs() < 0.01 && (merc.1 - 6_842_146.87).abs() < 0.01,
            "{merc:?}"
        );
        assert_eq!(
            Crs::from_epsg(4326).unwrap().forward(p),
            Some((21.006, 52.231_8))
        );
    }

    #[test]
    fn unknown_and_user_defined_crs_say_how_to_fix_the_file() {
        let err = Crs::from_epsg(USER_DEFINED).unwrap_err();
        assert!(
            err.contains("user-defined") && err.contains("gdalwarp"),
            "{err}"
        );
        let err = Crs::from_epsg(1).unwrap_err();
        assert!(err.contains("EPSG:1 ") && err.contains("gdalwarp"), "{err}");
    }
}
