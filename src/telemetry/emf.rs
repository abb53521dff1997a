//! CloudWatch Embedded Metric Format (EMF): one JSON line that CloudWatch Logs turns into
//! metrics as it ingests the function's log stream — no API call, no agent, no added latency.
//!
//! A small writer rather than a crate: we emit one fixed document per invocation from values we
//! already hold. The EMF crates checked (`metrics_cloudwatch_embedded`, `metrique-writer-format-emf`)
//! bring a process-global recorder or a metrics framework with its own macros and sinks, which
//! buys nothing here and makes in-process tests with several sandboxes share state.
//!
//! Spec: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>.
//! It owns the document's shape only; which metrics to send is the observer's business.

use serde_json::{Map, Value, json};

/// The EMF units this function uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Milliseconds,
    Count,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Milliseconds => "Milliseconds",
            Self::Count => "Count",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

impl Metric {
    pub fn ms(name: &'static str, value: f64) -> Self {
        Self {
            name,
            unit: Unit::Milliseconds,
            value,
        }
    }

    pub fn count(name: &'static str, value: usize) -> Self {
        Self {
            name,
            unit: Unit::Count,
            value: value as f64,
        }
    }
}

/// One EMF document: `namespace`, one dimension set made of `dimensions`, the `metrics`, and
/// `properties` (searchable in Logs Insights, not metrics), as a single JSON line.
///
/// Non-finite values are sent as 0: CloudWatch drops a whole document holding a value that is
/// not a number, and one bad timing must not hide the invocation's counts.
pub fn document(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[Metric],
    properties: &[(&str, Value)],
    timestamp_ms: u64,
) -> String {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(name, _)| *name).collect::<Vec<_>>()],
                "Metrics": metrics
                    .iter()
                    .map(|m| json!({"Name": m.name, "Unit": m.unit.as_str()}))
                    .collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        root.insert((*name).into(), json!(value));
    }
    for (name, value) in properties {
        root.insert((*name).into(), value.clone());
    }
    for m in metrics {
        let value = if m.value.is_finite() { m.value } else { 0.0 };
        root.insert(m.name.into(), json!(value));
    }
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_follows_the_emf_shape_on_one_line() {
        let line = document(
            "tilepredict",
            &[("FunctionName", "fn-1")],
            &[Metric::ms("TotalMs", 12.5), Metric::count("Failed", 2)],
            &[("requestId", json!("req-1"))],
            1_700_000_000_123,
        );
        assert!(!line.contains('\n'), "{line}");
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_123u64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "tilepredict");
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "TotalMs", "Unit": "Milliseconds"}, {"Name": "Failed", "Unit": "Count"}])
        );
        assert_eq!(v["FunctionName"], "fn-1");
        assert_eq!(v["TotalMs"], 12.5);
        assert_eq!(v["Failed"], 2.0);
        assert_eq!(v["requestId"], "req-1");
    }

    #[test]
    fn non_finite_values_become_zero_so_the_document_stays_valid() {
        let line = document(
            "ns",
            &[],
            &[
                Metric::ms("TotalMs", f64::NAN),
                Metric::ms("X", f64::INFINITY),
            ],
            &[],
            0,
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["TotalMs"].as_f64(), v["X"].as_f64()),
            (Some(0.0), Some(0.0))
        );
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
    }
}
