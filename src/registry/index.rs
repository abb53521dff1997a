//! The spatial index: register points in one R*-tree on (lon, lat) degrees, footprints by their
//! bounding boxes in another. Bulk-loaded once per sandbox, read-only afterwards, so lookups
//! need no lock.
//!
//! A point matches within a radius (the candidates in the radius's lat/lon box, then the
//! geodesic distance, see `geodesy`); a footprint matches when it contains the building
//! (even-odd rule over its rings, straight edges in lon/lat as RFC 7946 says).

use rstar::primitives::GeomWithData;
use rstar::{AABB, RTree, RTreeObject};

use super::geodesy::{degrees_around, distance_m};
use crate::centroid::ring_contains;

/// `[lon, lat]` in degrees, GeoJSON's order.
pub type Position = [f64; 2];

/// A polygon: its exterior ring, then its holes.
pub type Rings = Vec<Vec<Position>>;

/// The register record that matched a building, and how far it is (0 inside a footprint).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub record: u32,
    pub distance_m: f64,
}

/// One footprint in the tree: its box (what the tree sees), its rings, its record.
struct Footprint {
    envelope: AABB<Position>,
    rings: Box<[Box<[Position]>]>,
    record: u32,
}

impl RTreeObject for Footprint {
    type Envelope = AABB<Position>;

    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

pub struct Index {
    points: RTree<GeomWithData<Position, u32>>,
    footprints: RTree<Footprint>,
}

impl Index {
    /// Bulk-loads both trees (faster and better balanced than inserting one by one). Rings
    /// with fewer than three positions are ignored (the parsers refuse them first).
    pub fn build(points: Vec<(Position, u32)>, polygons: Vec<(Rings, u32)>) -> Self {
        let points = points
            .into_iter()
            .map(|(position, record)| GeomWithData::new(position, record))
            .collect();
        let footprints = polygons
            .into_iter()
            .filter(|(rings, _)| rings.first().is_some_and(|exterior| exterior.len() >= 3))
            .map(|(rings, record)| Footprint {
                envelope: AABB::from_points(rings[0].iter()),
                rings: rings.into_iter().map(Vec::into_boxed_slice).collect(),
                record,
            })
            .collect();
        Self {
            points: RTree::bulk_load(points),
            footprints: RTree::bulk_load(footprints),
        }
    }

    pub fn points(&self) -> usize {
        self.points.size()
    }

    pub fn footprints(&self) -> usize {
        self.footprints.size()
    }

    /// The footprint containing the building (the register's first, if several do), else the
    /// nearest point within `radius_m` (the register's first on a tie), else `None`.
    pub fn lookup(&self, lat: f64, lon: f64, radius_m: f64) -> Option<Hit> {
        self.containing(lat, lon)
            .or_else(|| self.nearest_within(lat, lon, radius_m))
    }

    fn containing(&self, lat: f64, lon: f64) -> Option<Hit> {
        self.footprints
            .locate_in_envelope_intersecting(AABB::from_point([lon, lat]))
            .filter(|f| ring_contains(&f.rings, [lon, lat]))
            .map(|f| f.record)
            .min()
            .map(|record| Hit {
                record,
                distance_m: 0.0,
            })
    }

    fn nearest_within(&self, lat: f64, lon: f64, radius_m: f64) -> Option<Hit> {
        let (dlat, dlon) = degrees_around(lat, radius_m);
        let mut best: Option<Hit> = None;
        for (west, east) in lon_ranges(lon - dlon, lon + dlon) {
            let window = AABB::from_corners([west, lat - dlat], [east, lat + dlat]);
            for candidate in self.points.locate_in_envelope(window) {
                let [c_lon, c_lat] = *candidate.geom();
                let distance_m = distance_m((lat, lon), (c_lat, c_lon));
                let hit = Hit {
                    record: candidate.data,
                    distance_m,
                };
                if distance_m <= radius_m && best.is_none_or(|b| closer(hit, b)) {
                    best = Some(hit);
                }
            }
        }
        best
    }
}

/// Nearer wins; on equal distance the register's earlier record does (a stable answer).
fn closer(a: Hit, b: Hit) -> bool {
    (a.distance_m, a.record) < (b.distance_m, b.record)
}

/// The longitude range as one or two ranges inside -180..180 (split at the antimeridian), with
/// no allocation: this runs once per building.
fn lon_ranges(west: f64, east: f64) -> impl Iterator<Item = (f64, f64)> {
    let wrapped = if west < -180.0 {
        Some((west + 360.0, 180.0))
    } else if east > 180.0 {
        Some((-180.0, east - 360.0))
    } else {
        None
    };
    std::iter::once((west.max(-180.0), east.min(180.0))).chain(wrapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use geographiclib_rs::{DirectGeodesic, Geodesic};

    fn offset(lat: f64, lon: f64, azimuth: f64, metres: f64) -> Position {
        let (lat2, lon2) = Geodesic::wgs84().direct(lat, lon, azimuth, metres);
        [lon2, lat2]
    }

    fn square(west: f64, south: f64, side: f64) -> Vec<Position> {
        vec![
            [west, south],
            [west + side, south],
            [west + side, south + side],
            [west, south + side],
            [west, south],
        ]
    }

    #[test]
    fn points_match_within_the_radius_and_the_nearest_wins() {
        let (lat, lon) = (52.2297, 21.0122);
        let index = Index::build(
            vec![
                (offset(lat, lon, 0.0, 16.0), 0),
                (offset(lat, lon, 90.0, 14.0), 1),
                (offset(lat, lon, 200.0, 9.5), 2),
            ],
            vec![],
        );
        let hit = index.lookup(lat, lon, 15.0).unwrap();
        assert_eq!(hit.record, 2);
        assert!((hit.distance_m - 9.5).abs() < 1e-3, "{hit:?}");
        let hit = index.lookup(lat, lon, 10.0).unwrap();
        assert_eq!(hit.record, 2);
        assert_eq!(index.lookup(lat, lon, 9.0), None);
        // Alone, 14 m is in, 16 m is out.
        let only = |record: u32, azimuth, metres| {
            Index::build(vec![(offset(lat, lon, azimuth, metres), record)], vec![])
                .lookup(lat, lon, 15.0)
        };
        assert!(only(1, 90.0, 14.0).is_some());
        assert!(only(0, 0.0, 16.0).is_none());
        assert!(only(0, 45.0, 15.0 - 1e-4).is_some());
        assert!(only(0, 45.0, 15.0 + 1e-4).is_none());
    }

    #[test]
    fn ties_go_to_the_earlier_record() {
        let p = [21.0, 52.0];
        let index = Index::build(vec![(p, 5), (p, 3), (p, 9)], vec![]);
        assert_eq!(index.lookup(52.0, 21.0, 15.0).unwrap().record, 3);
    }

    #[test]
    fn points_across_the_antimeridian_are_found() {
        let (lat, lon) = (-16.5, 179.99995);
        let east = offset(lat, lon, 90.0, 12.0);
        assert!(east[0] < 0.0);
        let index = Index::build(vec![(east, 0)], vec![]);
        let hit = index.lookup(lat, lon, 15.0).unwrap();
        assert!((hit.distance_m - 12.0).abs() < 1e-3);
        let west = Index::build(vec![([179.99995, lat], 0)], vec![]);
        let hit = west.lookup(east[1], east[0], 15.0).unwrap();
        assert!((hit.distance_m - 12.0).abs() < 1e-3);
    }

    #[test]
    fn footprints_match_by_containment_holes_excluded() {
        let exterior = square(21.0, 52.0, 0.001);
        let hole = square(21.0004, 52.0004, 0.0002);
        // An L shape: its box holds (21.0015, 52.0015), the shape does not.
        let l_shape = vec![vec![
            [21.001, 52.001],
            [21.002, 52.001],
            [21.002, 52.0013],
            [21.0013, 52.0013],
            [21.0013, 52.002],
            [21.001, 52.002],
        ]];
        let index = Index::build(vec![], vec![(vec![exterior, hole], 4), (l_shape, 7)]);
        assert_eq!(
            index.lookup(52.0002, 21.0002, 15.0),
            Some(Hit {
                record: 4,
                distance_m: 0.0
            })
        );
        assert_eq!(index.lookup(52.0005, 21.0005, 0.001), None, "in the hole");
        assert_eq!(index.lookup(52.00115, 21.0018, 0.001).unwrap().record, 7);
        assert_eq!(
            index.lookup(52.0015, 21.0015, 0.001),
            None,
            "in the L's notch"
        );
        assert_eq!(index.footprints(), 2);
    }

    #[test]
    fn footprints_win_over_points_and_overlaps_go_to_the_earlier_record() {
        let big = square(21.0, 52.0, 0.01);
        let small = square(21.004, 52.004, 0.002);
        let index = Index::build(
            vec![([21.005, 52.005], 0)],
            vec![(vec![small], 2), (vec![big], 1)],
        );
        assert_eq!(index.lookup(52.005, 21.005, 15.0).unwrap().record, 1);
        assert_eq!(index.lookup(52.001, 21.001, 15.0).unwrap().record, 1);
        assert_eq!(index.lookup(52.5, 21.5, 15.0), None);
        assert_eq!(index.points(), 1);
    }
}
