//! `REGISTRY_*` environment variables → [`RegistrySettings`], with defaults and range checks.
//! Without `REGISTRY_URI` there is no registry and the other variables are not read.

use crate::config::{ConfigError, SourceUri};

pub const DEFAULT_RADIUS_M: f64 = 15.0;
/// Above this the flat-ellipsoid distance (see `geodesy`) would no longer be exact to 1 mm.
pub const MAX_RADIUS_M: f64 = 1000.0;
pub const DEFAULT_POSITIVE_LABEL: &str = "asbestos";

/// Where the register is and how buildings are matched against it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrySettings {
    /// `REGISTRY_URI`: `s3://bucket/key`, `file:///path` or a local path; CSV or GeoJSON.
    pub uri: SourceUri,
    /// `REGISTRY_RADIUS_M`: a register point matches a building this close (geodesic metres).
    pub radius_m: f64,
    /// `REGISTRY_POSITIVE_LABEL`: the model label that counts as "flagged" in the summary.
    pub positive_label: String,
    /// `REGISTRY_SKIP_BAD_ROWS`: skip (count and log) malformed rows instead of failing init.
    pub skip_bad_rows: bool,
}

impl RegistrySettings {
    /// Reads the variables through `get` (trimmed, empty = unset, as `Config` does).
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let Some(raw_uri) = get("REGISTRY_URI") else {
            return Ok(None);
        };
        let uri = SourceUri::parse_named("REGISTRY_URI", &raw_uri)?;
        let radius_m = match get("REGISTRY_RADIUS_M") {
            None => DEFAULT_RADIUS_M,
            Some(raw) => match raw.parse::<f64>() {
                Ok(r) if r > 0.0 && r <= MAX_RADIUS_M => r,
                _ => {
                    return Err(ConfigError::new(
                        "REGISTRY_RADIUS_M",
                        &raw,
                        format!("expected metres, more than 0 and at most {MAX_RADIUS_M}"),
                    ));
                }
            },
        };
        let skip_bad_rows = match get("REGISTRY_SKIP_BAD_ROWS") {
            None => false,
            Some(raw) => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                _ => {
                    return Err(ConfigError::new(
                        "REGISTRY_SKIP_BAD_ROWS",
                        &raw,
                        "expected true or false",
                    ));
                }
            },
        };
        Ok(Some(Self {
            uri,
            radius_m,
            positive_label: get("REGISTRY_POSITIVE_LABEL")
                .unwrap_or_else(|| DEFAULT_POSITIVE_LABEL.to_string()),
            skip_bad_rows,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<RegistrySettings>, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        RegistrySettings::from_lookup(&|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn no_uri_no_registry() {
        assert_eq!(settings(&[("REGISTRY_RADIUS_M", "abc")]), Ok(None));
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = settings(&[("REGISTRY_URI", "s3://registers/asbestos.csv")])
            .unwrap()
            .unwrap();
        assert_eq!(
            s.uri,
            SourceUri::S3 {
                bucket: "registers".into(),
                key: "asbestos.csv".into()
            }
        );
        assert_eq!(s.radius_m, 15.0);
        assert_eq!(s.positive_label, "asbestos");
        assert!(!s.skip_bad_rows);
    }

    #[test]
    fn values_are_read_and_checked() {
        let s = settings(&[
            ("REGISTRY_URI", "/data/register.geojson"),
            ("REGISTRY_RADIUS_M", "7.5"),
            ("REGISTRY_POSITIVE_LABEL", "eternit"),
            ("REGISTRY_SKIP_BAD_ROWS", "TRUE"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.uri, SourceUri::File("/data/register.geojson".into()));
        assert_eq!(
            (s.radius_m, s.positive_label.as_str(), s.skip_bad_rows),
            (7.5, "eternit", true)
        );
        for (name, value) in [
            ("REGISTRY_RADIUS_M", "0"),
            ("REGISTRY_RADIUS_M", "1001"),
            ("REGISTRY_RADIUS_M", "NaN"),
            ("REGISTRY_SKIP_BAD_ROWS", "maybe"),
            ("REGISTRY_URI", "s3://no-key"),
        ] {
            let mut pairs = vec![("REGISTRY_URI", "/r.csv")];
            pairs.retain(|(n, _)| *n != name);
            pairs.push((name, value));
            let err = settings(&pairs).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }
}
