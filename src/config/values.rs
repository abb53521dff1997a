//! Parsers for one environment value each: a whole number in a range, a JSON object of HTTP
//! headers. Each error names the variable and the accepted form. (The model's settings have
//! their own parser, `model::settings`, shared with the model file's metadata.)

use crate::error::ConfigError;

pub fn number<T>(
    name: &'static str,
    raw: Option<String>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else { return Ok(default) };
    let value: T = raw.parse().map_err(|_| {
        ConfigError::new(
            name,
            &raw,
            format!("not a whole number in {}..={}", range.start(), range.end()),
        )
    })?;
    if !range.contains(&value) {
        return Err(ConfigError::new(
            name,
            &raw,
            format!("must be in {}..={}", range.start(), range.end()),
        ));
    }
    Ok(value)
}

/// `TILE_HEADERS` is a JSON object of string values: unambiguous for values holding `;` or `,`.
pub fn headers(raw: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let invalid = |reason: &str| ConfigError {
        name: "TILE_HEADERS",
        value: "<redacted>".to_string(),
        reason: reason.to_string(),
    };
    let parsed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(raw).map_err(|_| {
            invalid(r#"expected a JSON object like {"Referer": "https://example.org"}"#)
        })?;
    parsed
        .into_iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(value) => {
                reqwest::header::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| invalid(&format!("{name:?} is not a valid header name")))?;
                reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                    invalid(&format!(
                        "the value of {name:?} is not a valid header value"
                    ))
                })?;
                Ok((name, value))
            }
            _ => Err(invalid(&format!("the value of {name:?} must be a string"))),
        })
        .collect()
}

/// `BANDS`: three 1-based band numbers (red, green, blue), e.g. `1,2,3` of NAIP's RGBN.
pub fn bands(raw: Option<String>, max: u16) -> Result<Option<[u16; 3]>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let values: Result<Vec<u16>, _> = raw.split(',').map(|v| v.trim().parse::<u16>()).collect();
    match values {
        Ok(v) if v.len() == 3 && v.iter().all(|b| (1..=max).contains(b)) => {
            Ok(Some([v[0], v[1], v[2]]))
        }
        _ => Err(ConfigError::new(
            "BANDS",
            &raw,
            format!("expected three band numbers (red,green,blue), each 1..={max}, e.g. 1,2,3"),
        )),
    }
}

/// A positive decimal in a range, e.g. `CHIP_GSD_M=0.3`.
pub fn decimal(
    name: &'static str,
    raw: Option<String>,
    range: std::ops::RangeInclusive<f64>,
) -> Result<Option<f64>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.parse::<f64>() {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => Err(ConfigError::new(
            name,
            &raw,
            format!("must be a number in {}..={}", range.start(), range.end()),
        )),
    }
}
