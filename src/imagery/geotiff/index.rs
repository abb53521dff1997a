//! A mosaic index: which GeoTIFF covers which ground. Read once at init from a GeoJSON
//! FeatureCollection of footprints (each naming its file in a `location`, `path`, `url` or
//! `href` property) or a STAC ItemCollection (each item's footprint and its image asset: the
//! one with role `data`, else the first GeoTIFF asset), into an R-tree of footprint boxes.
//!
//! Where footprints overlap, the newest file wins when the features carry dates (STAC's
//! `datetime`, or a `datetime`/`date` property); otherwise, or on equal dates, the first in the
//! index does. Relative locations are taken from the index's own folder.

use rstar::{AABB, RTree, RTreeObject};
use serde_json::Value;

use super::Location;
use crate::centroid::ring_contains;

/// Properties that may name a file, in the order they are tried.
const LOCATION_KEYS: [&str; 4] = ["location", "path", "url", "href"];

/// One file's footprint: its box (what the tree sees), its rings in (lon, lat) degrees, and its
/// rank (0 wins overlaps).
struct Footprint {
    envelope: AABB<[f64; 2]>,
    rings: Vec<Vec<[f64; 2]>>,
    rank: usize,
    file: usize,
}

impl RTreeObject for Footprint {
    type Envelope = AABB<[f64; 2]>;

    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

pub struct MosaicIndex {
    pub files: Vec<Location>,
    tree: RTree<Footprint>,
}

impl MosaicIndex {
    /// Parses the index at `at`; errors name the feature (`features[i]`) and what is wrong.
    pub fn parse(at: &Location, bytes: &[u8]) -> Result<Self, String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if doc["type"] != "FeatureCollection" {
            return Err(
                "not a GeoJSON FeatureCollection or a STAC ItemCollection (\"type\": \"FeatureCollection\")"
                    .into(),
            );
        }
        let features = doc["features"]
            .as_array()
            .ok_or("has no \"features\" array")?;
        if features.is_empty() {
            return Err("lists no files (an empty \"features\" array)".into());
        }
        let mut entries = Vec::with_capacity(features.len());
        for (i, feature) in features.iter().enumerate() {
            let fail = |why: String| format!("features[{i}]: {why}");
            let href = href(feature).map_err(fail)?;
            let location = at
                .resolve(href)
                .map_err(|e| fail(format!("location {href:?}: {e}")))?;
            let rings = polygons(&feature["geometry"]).map_err(fail)?;
            let date = ["datetime", "date"]
                .iter()
                .find_map(|k| feature["properties"][k].as_str())
                .map(str::to_string);
            entries.push((location, rings, date));
        }
        // Newest first (ISO 8601 dates sort as text), then index order.
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by(|&a, &b| entries[b].2.cmp(&entries[a].2).then(a.cmp(&b)));
        let mut rank = vec![0; entries.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let mut files = Vec::with_capacity(entries.len());
        let mut footprints = Vec::new();
        for (i, (location, polygons, _)) in entries.into_iter().enumerate() {
            let file = files.len();
            files.push(location);
            for rings in polygons {
                let envelope = AABB::from_points(rings[0].iter());
                footprints.push(Footprint {
                    envelope,
                    rings,
                    rank: rank[i],
                    file,
                });
            }
        }
        Ok(Self {
            files,
            tree: RTree::bulk_load(footprints),
        })
    }

    /// The files a chip around (`lat`, `lon`) is read from, best first: the one whose
    /// footprint contains the building (the winner of any overlap), then up to `more` others
    /// whose footprints meet the chip's box (`[west, south]`, `[east, north]`), by the same
    /// order, for the chip's pixels the first one lacks. Empty when no footprint contains the
    /// building.
    pub fn files_for(
        &self,
        lat: f64,
        lon: f64,
        corners: ([f64; 2], [f64; 2]),
        more: usize,
    ) -> Vec<&Location> {
        let Some(first) = self
            .tree
            .locate_in_envelope_intersecting(AABB::from_point([lon, lat]))
            .filter(|f| ring_contains(&f.rings, [lon, lat]))
            .min_by_key(|f| f.rank)
        else {
            return Vec::new();
        };
        let mut others: Vec<&Footprint> = self
            .tree
            .locate_in_envelope_intersecting(AABB::from_corners(corners.0, corners.1))
            .filter(|f| f.file != first.file)
            .collect();
        others.sort_by_key(|f| f.rank);
        others.dedup_by_key(|f| f.file);
        std::iter::once(first)
            .chain(others.into_iter().take(more))
            .map(|f| &self.files[f.file])
            .collect()
    }

    /// The file whose footprint contains (`lat`, `lon`), the winner of any overlap.
    pub fn file_at(&self, lat: f64, lon: f64) -> Option<&Location> {
        self.files_for(lat, lon, ([lon, lat], [lon, lat]), 0)
            .into_iter()
            .next()
    }
}

/// The file a feature names: a STAC item's image asset, or a GeoJSON property.
fn href(feature: &Value) -> Result<&str, String> {
    if let Some(assets) = feature["assets"].as_object() {
        let is_tiff = |a: &Value| a["type"].as_str().is_some_and(|t| t.contains("tiff"));
        let has_role = |a: &Value| {
            a["roles"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == "data"))
        };
        let asset = assets
            .values()
            .find(|a| has_role(a) && is_tiff(a))
            .or_else(|| assets.values().find(|a| is_tiff(a)))
            .or_else(|| assets.values().find(|a| has_role(a)))
            .ok_or(
                "a STAC item with no GeoTIFF asset (one of type image/tiff, or role \"data\")",
            )?;
        return asset["href"]
            .as_str()
            .ok_or_else(|| "its image asset has no \"href\"".into());
    }
    let properties = &feature["properties"];
    LOCATION_KEYS
        .iter()
        .find_map(|k| properties[k].as_str())
        .ok_or_else(|| {
            format!(
                "no file named: give each feature a \"location\" property (or {}) with the \
                 GeoTIFF's s3://, https:// or relative path",
                LOCATION_KEYS[1..].join(", ")
            )
        })
}

/// A Polygon's or MultiPolygon's polygons, each as rings of `[lon, lat]`.
fn polygons(geometry: &Value) -> Result<Vec<Vec<Vec<[f64; 2]>>>, String> {
    let rings = |value: &Value| -> Result<Vec<Vec<[f64; 2]>>, String> {
        let rings = value.as_array().ok_or("malformed coordinates")?;
        let out: Vec<Vec<[f64; 2]>> = rings
            .iter()
            .map(|ring| {
                ring.as_array()
                    .ok_or("malformed ring")?
                    .iter()
                    .map(|p| match (p[0].as_f64(), p[1].as_f64()) {
                        (Some(lon), Some(lat)) if lon.abs() <= 180.0 && lat.abs() <= 90.0 => {
                            Ok([lon, lat])
                        }
                        _ => Err(format!("position {p} is not [lon, lat] in degrees")),
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<_, _>>()?;
        if out.first().is_none_or(|exterior| exterior.len() < 3) {
            return Err("a footprint needs a ring of at least 3 positions".into());
        }
        Ok(out)
    };
    match geometry["type"].as_str() {
        Some("Polygon") => Ok(vec![rings(&geometry["coordinates"])?]),
        Some("MultiPolygon") => geometry["coordinates"]
            .as_array()
            .ok_or("malformed coordinates")?
            .iter()
            .map(rings)
            .collect(),
        Some(other) => Err(format!(
            "a {other} footprint: each file's footprint must be a Polygon or MultiPolygon"
        )),
        None => Err("no geometry: each feature needs the file's footprint".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn square(w: f64, s: f64, side: f64) -> Value {
        json!({"type": "Polygon", "coordinates": [[[w, s], [w + side, s], [w + side, s + side], [w, s + side], [w, s]]]})
    }

    fn parse(doc: Value) -> Result<MosaicIndex, String> {
        let at = Location::parse("s3://b/m/index.geojson").unwrap();
        MosaicIndex::parse(&at, doc.to_string().as_bytes())
    }

    #[test]
    fn overlaps_go_to_the_first_without_dates_and_to_the_newest_with_them() {
        let feature = |p: &str, w: f64, date: Option<&str>| {
            let mut props = json!({"location": p});
            if let Some(d) = date {
                props["datetime"] = json!(d);
            }
            json!({"type": "Feature", "geometry": square(w, 50.0, 2.0), "properties": props})
        };
        let plain = parse(json!({"type": "FeatureCollection", "features": [
            feature("a.tif", 20.0, None), feature("b.tif", 21.0, None)]}))
        .unwrap();
        assert_eq!(
            plain.file_at(51.0, 21.5).unwrap().to_string(),
            "s3://b/m/a.tif"
        );
        assert_eq!(
            plain.file_at(51.0, 22.5).unwrap().to_string(),
            "s3://b/m/b.tif"
        );
        assert!(plain.file_at(51.0, 25.0).is_none());
        let dated = parse(json!({"type": "FeatureCollection", "features": [
            feature("a.tif", 20.0, Some("2020-05-01")), feature("b.tif", 21.0, Some("2023-07-01"))]}))
        .unwrap();
        assert_eq!(
            dated.file_at(51.0, 21.5).unwrap().to_string(),
            "s3://b/m/b.tif"
        );
    }

    #[test]
    fn stac_items_name_their_data_asset() {
        let index = parse(json!({"type": "FeatureCollection", "features": [{
            "type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": square(20.0, 50.0, 1.0),
            "properties": {"datetime": "2024-01-01T00:00:00Z"},
            "assets": {
                "thumbnail": {"href": "x.png", "type": "image/png", "roles": ["thumbnail"]},
                "image": {"href": "https://h/x.tif", "type": "image/tiff; application=geotiff", "roles": ["data"]}
            }}]}))
        .unwrap();
        assert_eq!(
            index.file_at(50.5, 20.5).unwrap(),
            &Location::Http("https://h/x.tif".into())
        );
    }

    #[test]
    fn broken_features_are_named() {
        for (feature, needle) in [
            (
                json!({"type": "Feature", "geometry": square(0.0, 0.0, 1.0), "properties": {}}),
                "no file named",
            ),
            (
                json!({"type": "Feature", "geometry": null, "properties": {"location": "a.tif"}}),
                "no geometry",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Point", "coordinates": [0, 0]}, "properties": {"location": "a.tif"}}),
                "a Point footprint",
            ),
            (
                json!({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [500, 0], [0, 1]]]}, "properties": {"location": "a.tif"}}),
                "not [lon, lat]",
            ),
            (
                json!({"type": "Feature", "geometry": square(0.0, 0.0, 1.0), "properties": {"location": "ftp://x/a.tif"}}),
                "must start with",
            ),
            (
                json!({"type": "Feature", "geometry": square(0.0, 0.0, 1.0), "assets": {"t": {"href": "t.png", "type": "image/png"}}}),
                "no GeoTIFF asset",
            ),
        ] {
            let good = json!({"type": "Feature", "geometry": square(0.0, 0.0, 1.0), "properties": {"location": "ok.tif"}});
            let err = parse(json!({"type": "FeatureCollection", "features": [good, feature]}))
                .err()
                .unwrap();
            assert!(
                err.starts_with("features[1]: ") && err.contains(needle),
                "{err}"
            );
        }
        assert!(
            parse(json!({"type": "Feature"}))
                .err()
                .unwrap()
                .contains("FeatureCollection")
        );
        assert!(
            parse(json!({"type": "FeatureCollection", "features": []}))
                .err()
                .unwrap()
                .contains("no files")
        );
    }
}
