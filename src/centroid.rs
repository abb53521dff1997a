//! The point a footprint is classified at: the area-weighted centroid of a polygon or
//! multipolygon, computed in longitude/latitude degrees; and whether a footprint contains a
//! point ([`ring_contains`], for the register's footprints and a mosaic's files).
//!
//! Why lon/lat and not web-mercator metres (the chips' projection): RFC 7946 defines a GeoJSON
//! edge as a straight line in lon/lat, so only there is the polygon exactly what the caller
//! drew (a ring that is a straight line has exactly no area). A centroid is unchanged by affine
//! maps, and mercator is affine to one part in 10⁴ across a 100 m building at 52° N, so the
//! result differs from the mercator centroid by well under a millimetre: far below a pixel.
//! Holes subtract their area; ring orientation is ignored (RFC 7946 asks writers for the
//! right-hand rule but tells readers not to rely on it); rings crossing the antimeridian are
//! unwrapped around the first vertex. Pure functions only: GeoJSON parsing is
//! `events::geojson`'s job.
//!
//! Not `geo`'s `Centroid`: the antimeridian unwrap and the no-area check would stay here, it is
//! slower once the rings are converted (docs/PERFORMANCE.md, "Hand-written geometry vs crates"),
//! and its fallback for flat rings calls `f64::hypot`, linking `hypot@GLIBC_2.35`, which Lambda's
//! provided.al2023 lacks.

use crate::geo::LatLon;

/// A ring's vertices; closing the ring (repeating the first vertex) is optional.
pub type Ring = Vec<LatLon>;

/// A polygon: the outer ring first, then its holes.
pub type Polygon = Vec<Ring>;

/// Even-odd rule over all rings (`[lon, lat]` positions): inside the exterior and outside
/// every hole. Works for closed and unclosed rings alike (a closing edge of zero length never
/// crosses); straight edges in lon/lat, as RFC 7946 says.
///
/// Not `geo`'s `CoordinatePosition`: it answers the same off the boundary but is slower per test,
/// keeps footprints in larger `Vec`s and brings 18 crates (docs/PERFORMANCE.md, "Hand-written
/// geometry vs crates").
pub fn ring_contains<R: AsRef<[[f64; 2]]>>(rings: &[R], p: [f64; 2]) -> bool {
    let [x, y] = p;
    let mut inside = false;
    for ring in rings {
        let ring = ring.as_ref();
        let Some(mut previous) = ring.last() else {
            continue;
        };
        for current in ring {
            let ([xi, yi], [xj, yj]) = (*current, *previous);
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
            previous = current;
        }
    }
    inside
}

/// Footprints with less area than this (square degrees; ≈ 0.01 m² at the equator) have no
/// usable centroid. Real buildings are thousands of times larger; rounding noise is far smaller.
const MIN_AREA_DEG2: f64 = 1e-12;

/// The centroid of one polygon (outer ring minus holes).
pub fn polygon(polygon: &[Ring]) -> Result<LatLon, String> {
    centroid(&[polygon])
}

/// The area-weighted centroid of several polygons.
pub fn multipolygon(polygons: &[Polygon]) -> Result<LatLon, String> {
    let parts: Vec<&[Ring]> = polygons.iter().map(Vec::as_slice).collect();
    centroid(&parts)
}

fn centroid(polygons: &[&[Ring]]) -> Result<LatLon, String> {
    let origin = polygons
        .iter()
        .copied()
        .flatten()
        .flatten()
        .next()
        .copied()
        .ok_or("the geometry has no positions")?;
    let mut area = 0.0;
    let mut moment = (0.0, 0.0);
    for rings in polygons {
        let Some((outer, holes)) = rings.split_first() else {
            return Err("a polygon has no rings".into());
        };
        for (i, ring) in std::iter::once(outer).chain(holes).enumerate() {
            let (a, (mx, my)) = ring_moments(ring, origin)?;
            // Outer rings add their area, holes subtract theirs, whatever their winding.
            let sign = if (i == 0) == (a >= 0.0) { 1.0 } else { -1.0 };
            area += sign * a;
            moment.0 += sign * mx;
            moment.1 += sign * my;
        }
    }
    if !area.is_finite() || area <= MIN_AREA_DEG2 {
        return Err(format!(
            "the footprint has no area ({area:.3e} square degrees): its rings are degenerate or its holes cover it"
        ));
    }
    let lon = origin.lon + moment.0 / area;
    let lat = origin.lat + moment.1 / area;
    LatLon::new(lat, wrap(lon))
}

/// Signed area and first moments (area · centroid, relative to `origin`) of one ring.
fn ring_moments(ring: &[LatLon], origin: LatLon) -> Result<(f64, (f64, f64)), String> {
    let mut points: Vec<(f64, f64)> = ring
        .iter()
        .map(|p| (unwrap(p.lon - origin.lon), p.lat - origin.lat))
        .collect();
    if points.len() > 1 && points.first() == points.last() {
        points.pop();
    }
    if points.len() < 3 {
        return Err(format!(
            "a ring has {} distinct positions; a polygon ring needs at least 3",
            points.len()
        ));
    }
    let (mut twice_area, mut mx, mut my) = (0.0, 0.0, 0.0);
    for (i, &(x0, y0)) in points.iter().enumerate() {
        let (x1, y1) = points[(i + 1) % points.len()];
        let cross = x0 * y1 - x1 * y0;
        twice_area += cross;
        mx += (x0 + x1) * cross;
        my += (y0 + y1) * cross;
    }
    // Shoelace: area = ½∑cross, centroid = ∑(p₀+p₁)·cross / (6 · area).
    Ok((twice_area / 2.0, (mx / 6.0, my / 6.0)))
}

/// A longitude offset taken the short way round the world (rings across the antimeridian).
fn unwrap(dlon: f64) -> f64 {
    dlon - 360.0 * (dlon / 360.0).round()
}

/// A longitude brought back into −180..180.
fn wrap(lon: f64) -> f64 {
    (lon + 180.0).rem_euclid(360.0) - 180.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(points: &[(f64, f64)]) -> Ring {
        points
            .iter()
            .map(|&(lon, lat)| LatLon::new(lat, lon).unwrap())
            .collect()
    }

    fn close(a: LatLon, b: LatLon, tolerance_deg: f64) -> bool {
        (a.lat - b.lat).abs() < tolerance_deg && (a.lon - b.lon).abs() < tolerance_deg
    }

    /// A square is centred on its middle, closed or not, clockwise or not.
    #[test]
    fn a_square_footprint_is_centred_on_its_middle() {
        let (lon, lat, d) = (21.0122, 52.2297, 0.0001);
        let centre = LatLon::new(lat, lon).unwrap();
        let corners = [
            (lon - d, lat - d),
            (lon + d, lat - d),
            (lon + d, lat + d),
            (lon - d, lat + d),
        ];
        let mut closed = corners.to_vec();
        closed.push(corners[0]);
        let mut clockwise = closed.clone();
        clockwise.reverse();
        for r in [ring(&corners), ring(&closed), ring(&clockwise)] {
            let c = polygon(&[r]).unwrap();
            assert!(close(c, centre, 1e-12), "{c:?}");
        }
    }

    /// An L-shape's centroid is pulled toward its bigger arm, as area weighting demands (the
    /// vertex average would not be).
    #[test]
    fn an_l_shape_is_weighted_by_area_not_by_vertices() {
        // Unit cells of 0.0001°: a 2×1 bar along the bottom plus a 1×1 cell on its left end.
        let u = 0.0001;
        let (x0, y0) = (21.0, 52.0);
        let l = ring(&[
            (x0, y0),
            (x0 + 2.0 * u, y0),
            (x0 + 2.0 * u, y0 + u),
            (x0 + u, y0 + u),
            (x0 + u, y0 + 2.0 * u),
            (x0, y0 + 2.0 * u),
        ]);
        let c = polygon(&[l]).unwrap();
        // Areas 2 (centre 1, 0.5) and 1 (centre 0.5, 1.5) → centroid (5/6, 5/6) cells.
        assert!((c.lon - (x0 + 5.0 / 6.0 * u)).abs() < 1e-12, "{c:?}");
        assert!((c.lat - (y0 + 5.0 / 6.0 * u)).abs() < 1e-12, "{c:?}");
    }

    #[test]
    fn holes_pull_the_centroid_away_from_themselves() {
        let d = 0.0002;
        let outer = ring(&[
            (21.0, 52.0),
            (21.0 + d, 52.0),
            (21.0 + d, 52.0 + d),
            (21.0, 52.0 + d),
        ]);
        // A hole in the east half (wound the same way as the outer ring: winding is ignored).
        let hole = ring(&[
            (21.0 + d * 0.6, 52.0 + d * 0.25),
            (21.0 + d * 0.9, 52.0 + d * 0.25),
            (21.0 + d * 0.9, 52.0 + d * 0.75),
            (21.0 + d * 0.6, 52.0 + d * 0.75),
        ]);
        let solid = polygon(std::slice::from_ref(&outer)).unwrap();
        let holed = polygon(&[outer, hole]).unwrap();
        // Areas 1 (centre 0.5) less 0.15 (centre 0.75), in units of d.
        let want = 21.0 + (0.5 - 0.15 * 0.75) / 0.85 * d;
        assert!((holed.lon - want).abs() < 1e-12, "{holed:?}");
        assert!(holed.lon < solid.lon);
        assert!((holed.lat - solid.lat).abs() < 1e-12);
    }

    #[test]
    fn multipolygons_weight_each_part_by_its_area() {
        let u = 0.0001;
        let square = |lon: f64, side: f64| {
            vec![ring(&[
                (lon * u, 0.0),
                ((lon + side) * u, 0.0),
                ((lon + side) * u, side * u),
                (lon * u, side * u),
            ])]
        };
        // A 3×3 and a 1×1 square (cells of 0.0001°): areas 9 and 1, centres 1.5 and 10.5 cells.
        let c = multipolygon(&[square(0.0, 3.0), square(10.0, 1.0)]).unwrap();
        let want = (9.0 * 1.5 + 10.5) / 10.0 * u;
        assert!((c.lon - want).abs() < 1e-10, "{c:?}");
        let one = multipolygon(&[square(0.0, 3.0)]).unwrap();
        assert_eq!(one, polygon(&square(0.0, 3.0)).unwrap());
    }

    #[test]
    fn a_footprint_across_the_antimeridian_is_centred_on_it() {
        let r = ring(&[
            (179.9999, -17.0),
            (-179.9999, -17.0),
            (-179.9999, -16.9998),
            (179.9999, -16.9998),
        ]);
        let c = polygon(&[r]).unwrap();
        assert!(c.lon.abs() > 179.99999, "{c:?}");
        assert!((c.lat + 16.9999).abs() < 1e-6, "{c:?}");
        assert!(LatLon::new(c.lat, c.lon).is_ok());
    }

    #[test]
    fn degenerate_footprints_are_refused_with_a_reason() {
        let line = ring(&[(21.0, 52.0), (21.0001, 52.0001), (21.0002, 52.0002)]);
        assert!(polygon(&[line]).unwrap_err().contains("no area"));
        let two = ring(&[(21.0, 52.0), (21.0001, 52.0), (21.0, 52.0)]);
        assert!(polygon(&[two]).unwrap_err().contains("at least 3"));
        let square = ring(&[
            (21.0, 52.0),
            (21.001, 52.0),
            (21.001, 52.001),
            (21.0, 52.001),
        ]);
        // A hole as large as the polygon leaves nothing.
        assert!(
            polygon(&[square.clone(), square])
                .unwrap_err()
                .contains("no area")
        );
        assert!(polygon(&[]).unwrap_err().contains("no positions"));
        assert!(multipolygon(&[]).unwrap_err().contains("no positions"));
    }
}
