//! Short geodesic distances on the WGS 84 ellipsoid, and the lat/lon box a radius covers.
//!
//! Over the few metres a registry match spans, the ellipsoid is flat to within far less than a
//! millimetre, so the distance is the local tangent-plane one scaled by the ellipsoid's radii of
//! curvature at the mid-latitude (meridional `M`, prime vertical `N`). It agrees with Karney's
//! geodesic to under 1 mm up to 1 km (tested against `geographiclib-rs`), which is why
//! `REGISTRY_RADIUS_M` is capped at 1,000 m.
//!
//! `geographiclib-rs` stays the tests' oracle, not the lookup's: its full inverse is several times
//! slower (docs/PERFORMANCE.md, "Hand-written geometry vs crates") and calls `f64::hypot`, linking
//! `hypot@GLIBC_2.35`.

/// WGS 84 semi-major axis (m) and flattening.
const A: f64 = 6_378_137.0;
const F: f64 = 1.0 / 298.257_223_563;
/// First eccentricity squared.
const E2: f64 = F * (2.0 - F);

/// Metres per radian along the meridian (`M`) and along the parallel (`N·cos φ`) at `lat_deg`.
fn metres_per_radian(lat_deg: f64) -> (f64, f64) {
    let (sin, cos) = lat_deg.to_radians().sin_cos();
    let w2 = 1.0 - E2 * sin * sin;
    let n = A / w2.sqrt();
    let m = A * (1.0 - E2) / (w2 * w2.sqrt());
    (m, n * cos)
}

/// Longitude difference folded into -180..180, so neighbours across the antimeridian are near.
fn lon_delta(from: f64, to: f64) -> f64 {
    let d = to - from;
    if d > 180.0 {
        d - 360.0
    } else if d < -180.0 {
        d + 360.0
    } else {
        d
    }
}

/// Distance in metres between two points given as (lat, lon) degrees; exact to < 1 mm below
/// 1 km (see the module doc), not meant for longer distances.
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (north, east) = metres_per_radian((a.0 + b.0) / 2.0);
    let dy = (b.0 - a.0).to_radians() * north;
    let dx = lon_delta(a.1, b.1).to_radians() * east;
    // Not `f64::hypot`: a build on glibc ≥ 2.35 links `hypot@GLIBC_2.35`, which Lambda's
    // provided.al2023 (glibc 2.34) lacks (`make check-package` caught it). At building scale
    // (metres to a kilometre) the plain form cannot overflow or lose precision.
    (dy * dy + dx * dx).sqrt()
}

/// Half-sizes in degrees (lat, lon) of a box around `lat_deg` that holds every point within
/// `radius_m`, with a margin for the curvature changing across the box.
pub fn degrees_around(lat_deg: f64, radius_m: f64) -> (f64, f64) {
    let (north, east) = metres_per_radian(lat_deg);
    let margin = 1.01;
    let dlat = (radius_m / north).to_degrees() * margin;
    let dlon = (radius_m / east.max(1e-9)).to_degrees() * margin;
    (dlat, dlon.min(180.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use geographiclib_rs::{DirectGeodesic, Geodesic, InverseGeodesic};

    #[test]
    fn agrees_with_karney_to_a_millimetre_up_to_one_kilometre() {
        let wgs84 = Geodesic::wgs84();
        let mut worst: f64 = 0.0;
        for lat in [-85.0, -60.0, -33.9, 0.0, 1e-3, 45.0, 52.2297, 70.0, 85.05] {
            for azimuth in [0.0, 17.0, 45.0, 90.0, 133.0, 180.0, 241.0, 315.0] {
                for metres in [0.5, 1.0, 14.0, 15.0, 16.0, 100.0, 1000.0] {
                    let (lat2, lon2) = wgs84.direct(lat, 21.0, azimuth, metres);
                    let exact: f64 = wgs84.inverse(lat, 21.0, lat2, lon2);
                    let ours = distance_m((lat, 21.0), (lat2, lon2));
                    assert!((exact - metres).abs() < 1e-6);
                    worst = worst.max((ours - exact).abs());
                }
            }
        }
        assert!(worst < 1e-3, "worst difference {worst} m");
    }

    #[test]
    fn neighbours_across_the_antimeridian_are_near() {
        let wgs84 = Geodesic::wgs84();
        let (lat2, lon2) = wgs84.direct(-16.5, 179.99995, 90.0, 12.0);
        assert!(lon2 < -179.9, "{lon2}");
        let d = distance_m((-16.5, 179.99995), (lat2, lon2));
        assert!((d - 12.0).abs() < 1e-3, "{d}");
    }

    #[test]
    fn the_box_holds_every_point_of_the_radius() {
        let wgs84 = Geodesic::wgs84();
        for lat in [0.0, 52.0, 80.0, 85.05] {
            let (dlat, dlon) = degrees_around(lat, 15.0);
            for azimuth in (0..360).step_by(5) {
                let (lat2, lon2) = wgs84.direct(lat, 0.0, f64::from(azimuth), 15.0);
                assert!((lat2 - lat).abs() <= dlat, "lat {lat} az {azimuth}");
                assert!(lon2.abs() <= dlon, "lat {lat} az {azimuth}");
            }
        }
    }
}
