//! The register of buildings already known to have what the model looks for (in Poland the
//! national asbestos database, elsewhere a municipal inventory): loaded once per sandbox,
//! indexed in memory, and looked up for every successful prediction, so callers see where the
//! model and the register disagree.
//!
//! `config` reads `REGISTRY_*` into [`RegistrySettings`]; `load` fetches (via `crate::blob`), parses and indexes
//! during init; `from_csv` / `from_geojson` turn bytes into rows (`rows`) and records
//! (`records`); `index` + `geodesy` match a building; `answer` shapes the JSON that every
//! answer shape adds. Nothing here knows about Lambda events.

pub mod answer;
mod from_csv;
mod from_geojson;
mod geodesy;
mod index;
mod load;
mod records;
mod rows;

use crate::blob::BlobUri;
use crate::geo::LatLon;
use crate::outcome::Listing;
use index::Index;
use records::Records;

pub use from_csv::{LAT_COLUMNS, LON_COLUMNS};
pub use load::{RegistryError, load};
pub use rows::{BadRows, ParseError, Row};

pub const DEFAULT_RADIUS_M: f64 = 15.0;
/// Above this the flat-ellipsoid distance (see `geodesy`) would no longer be exact to 1 mm.
pub const MAX_RADIUS_M: f64 = 1000.0;
pub const DEFAULT_POSITIVE_LABEL: &str = "asbestos";

/// Where the register is and how buildings are matched against it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// `REGISTRY_URI`: `s3://bucket/key`, `file:///path` or a local path; CSV or GeoJSON.
    pub uri: BlobUri,
    /// `REGISTRY_RADIUS_M`: a register point matches a building this close (geodesic metres).
    pub radius_m: f64,
    /// `REGISTRY_POSITIVE_LABEL`: the model label that counts as "flagged" in the summary.
    pub positive_label: String,
    /// `REGISTRY_SKIP_BAD_ROWS`: skip (count and log) malformed rows instead of failing init.
    pub skip_bad_rows: bool,
}

/// What the log and the answer's summary say about the loaded register.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryInfo {
    pub uri: String,
    /// The S3 ETag, or size and mtime for a file (set by [`load`]).
    pub version: String,
    /// `csv` or `geojson`.
    pub format: &'static str,
    pub records: usize,
    pub points: usize,
    pub footprints: usize,
    /// Fetch + parse + index, in ms (set by [`load`]).
    pub load_ms: f64,
}

/// The loaded register: its index, its records and how to match.
pub struct Registry {
    index: Index,
    records: Records,
    pub settings: RegistrySettings,
    pub info: RegistryInfo,
    /// Rows skipped under `REGISTRY_SKIP_BAD_ROWS=true`.
    pub bad_rows: BadRows,
}

impl Registry {
    /// Parses and indexes a register held in memory: GeoJSON when its first character is `{`,
    /// CSV otherwise (S3 keys need not have an extension to be read right). CPU-bound: at
    /// init it runs on a blocking thread.
    pub fn parse(bytes: &[u8], settings: RegistrySettings) -> Result<Self, ParseError> {
        let geojson = bytes
            .strip_prefix(b"\xEF\xBB\xBF")
            .unwrap_or(bytes)
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            == Some(&b'{');
        let mut parsed = if geojson {
            from_geojson::parse(bytes, settings.skip_bad_rows)?
        } else {
            from_csv::parse(bytes, settings.skip_bad_rows)?
        };
        parsed.records.shrink_to_fit();
        let index = Index::build(parsed.points, parsed.polygons);
        let info = RegistryInfo {
            uri: settings.uri.to_string(),
            version: String::new(),
            format: if geojson { "geojson" } else { "csv" },
            records: parsed.records.len(),
            points: index.points(),
            footprints: index.footprints(),
            load_ms: 0.0,
        };
        Ok(Self {
            index,
            records: parsed.records,
            settings,
            info,
            bad_rows: parsed.bad_rows,
        })
    }

    /// The register's answer for a building at `at`: a footprint containing it, else the
    /// nearest point within `REGISTRY_RADIUS_M`, else not listed.
    pub fn listing(&self, at: LatLon) -> Listing {
        match self.index.lookup(at.lat, at.lon, self.settings.radius_m) {
            Some(hit) => Listing {
                listed: true,
                record: Some(self.records.get(hit.record as usize)),
                distance_m: Some((hit.distance_m * 100.0).round() / 100.0),
            },
            None => Listing {
                listed: false,
                record: None,
                distance_m: None,
            },
        }
    }

    /// Heap bytes of the records' text (the index is measured by `examples/registry_bench.rs`).
    pub fn record_bytes(&self) -> usize {
        self.records.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings() -> RegistrySettings {
        RegistrySettings {
            uri: BlobUri::File("/r".into()),
            radius_m: 15.0,
            positive_label: "asbestos".into(),
            skip_bad_rows: false,
        }
    }

    #[test]
    fn the_format_is_read_from_the_content() {
        let csv = Registry::parse(b"id,lat,lon\n7,52.0,21.0\n", settings()).unwrap();
        assert_eq!(
            (csv.info.format, csv.info.records, csv.info.points),
            ("csv", 1, 1)
        );
        let geojson = Registry::parse(
            b"\xEF\xBB\xBF \n{\"type\":\"FeatureCollection\",\"features\":[]}",
            settings(),
        )
        .unwrap();
        assert_eq!((geojson.info.format, geojson.info.records), ("geojson", 0));
    }

    #[test]
    fn the_demo_register_parses() {
        let demo = include_bytes!("../../fixtures/registry/demo.csv");
        let registry = Registry::parse(demo, settings()).unwrap();
        assert_eq!((registry.info.records, registry.bad_rows.count), (3, 0));
    }

    #[test]
    fn a_listing_carries_the_record_and_the_distance_in_centimetres() {
        let registry =
            Registry::parse(b"id,lat,lon,year\nA-1,52.0001,21.0,1975\n", settings()).unwrap();
        let listing = registry.listing(LatLon {
            lat: 52.0,
            lon: 21.0,
        });
        assert_eq!(
            listing,
            Listing {
                listed: true,
                record: Some(json!({"id": "A-1", "lat": "52.0001", "lon": "21.0", "year": "1975"})),
                distance_m: Some(11.13),
            }
        );
        assert_eq!(
            serde_json::to_value(registry.listing(LatLon {
                lat: 53.0,
                lon: 21.0
            }))
            .unwrap(),
            json!({"listed": false, "record": null, "distance_m": null})
        );
    }
}
