//! `REGISTRY_*` environment variables → [`RegistrySettings`], with defaults and range checks.
//! Without `REGISTRY_URI` there is no registry and the other variables are not read.

use crate::blob::BlobUri;
use crate::error::ConfigError;
use crate::registry::{DEFAULT_POSITIVE_LABEL, DEFAULT_RADIUS_M, MAX_RADIUS_M, RegistrySettings};

/// Reads the variables through `get` (trimmed, empty = unset, as `Config` does).
pub fn settings(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<RegistrySettings>, ConfigError> {
    let Some(raw_uri) = get("REGISTRY_URI") else {
        return Ok(None);
    };
    let uri = BlobUri::parse("REGISTRY_URI", &raw_uri)?;
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
    Ok(Some(RegistrySettings {
        uri,
        radius_m,
        positive_label: get("REGISTRY_POSITIVE_LABEL")
            .unwrap_or_else(|| DEFAULT_POSITIVE_LABEL.to_string()),
        skip_bad_rows,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<RegistrySettings>, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        settings(&|name| map.get(name).map(|v| v.to_string()))
    }

    #[test]
    fn no_uri_no_registry() {
        assert_eq!(read(&[("REGISTRY_RADIUS_M", "abc")]), Ok(None));
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = read(&[("REGISTRY_URI", "s3://registers/asbestos.csv")])
            .unwrap()
            .unwrap();
        assert_eq!(
            s.uri,
            BlobUri::S3 {
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
        let s = read(&[
            ("REGISTRY_URI", "/data/register.geojson"),
            ("REGISTRY_RADIUS_M", "7.5"),
            ("REGISTRY_POSITIVE_LABEL", "eternit"),
            ("REGISTRY_SKIP_BAD_ROWS", "TRUE"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.uri, BlobUri::File("/data/register.geojson".into()));
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
            let err = read(&pairs).unwrap_err();
            assert_eq!(err.name, name, "{err}");
        }
    }
}
