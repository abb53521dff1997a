//! Building files for local runs (`bootstrap predict`): reading buildings from CSV, GeoJSON,
//! direct-invoke JSON or JSON Lines as a stream, writing predictions as CSV, GeoJSON or JSON
//! Lines as they come, and reading back an output a stopped run left, to resume it.
//!
//! Buildings are made by the same parsers Lambda's callers go through
//! ([`crate::request::parse_building`], [`crate::events::geojson::building`]) and answered by
//! the same functions ([`crate::answer::direct_prediction`],
//! [`crate::events::geojson::annotate`]), so a building means the same thing, and fails the
//! same way, in a file as in a request. Nothing here predicts: `cli` feeds [`Item`]s to
//! `App::predict` and their outcomes to a [`write::Writer`].

mod csv_in;
mod json_in;
mod jsonl_in;
pub mod read;
pub mod resume;
pub mod write;

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::request::BuildingInput;

/// What an input file holds, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// `.csv`: a header naming `lat` and `lon` columns (as registers do), `id` optional.
    Csv,
    /// `.json` or `.geojson`: a GeoJSON FeatureCollection or a direct invoke's
    /// `{"buildings": [...]}`, told apart by the array it holds.
    Json,
    /// `.jsonl` or `.ndjson`: one building (or GeoJSON Feature) per line.
    JsonLines,
}

/// What an output file is written as, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Csv,
    /// A FeatureCollection, one feature a line.
    GeoJson,
    /// One prediction object a line, as in a direct answer's `predictions`.
    JsonLines,
}

/// The extensions read, for messages.
pub const INPUT_EXTENSIONS: &str = ".csv, .geojson, .json, .jsonl or .ndjson";
/// The extensions written, for messages.
pub const OUTPUT_EXTENSIONS: &str = ".csv, .geojson or .jsonl";

impl InputFormat {
    pub fn of(path: &Path) -> Result<Self, FileError> {
        match extension(path).as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("json" | "geojson") => Ok(Self::Json),
            Some("jsonl" | "ndjson" | "geojsonl") => Ok(Self::JsonLines),
            _ => Err(FileError::invalid(
                path,
                format!("cannot tell the input's format from its name: name it {INPUT_EXTENSIONS}"),
            )),
        }
    }
}

impl OutputFormat {
    pub fn of(path: &Path) -> Result<Self, FileError> {
        match extension(path).as_deref() {
            Some("csv") => Ok(Self::Csv),
            Some("geojson") => Ok(Self::GeoJson),
            Some("jsonl" | "ndjson") => Ok(Self::JsonLines),
            Some("json") => Err(FileError::invalid(
                path,
                "a .json output is ambiguous: name it .geojson for a FeatureCollection, or \
                 .jsonl for one prediction a line",
            )),
            _ => Err(FileError::invalid(
                path,
                format!(
                    "cannot tell the output's format from its name: name it {OUTPUT_EXTENSIONS}"
                ),
            )),
        }
    }

    /// The format in a person's words.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csv => "CSV",
            Self::GeoJson => "GeoJSON",
            Self::JsonLines => "JSON Lines",
        }
    }
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// One building read from an input, with what the writers echo.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub building: BuildingInput,
    pub source: Source,
}

/// The input's own form of a building, where a writer echoes it rather than the parsed fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A JSON building object: the parsed fields say it all.
    Fields,
    /// A CSV row's fields as written, in the header's order (a CSV output repeats them).
    Row(Vec<String>),
    /// A GeoJSON Feature as sent (a GeoJSON output annotates it).
    Feature(Value),
}

/// A GeoJSON Feature as a building (located as a GeoJSON request's features are), with its
/// properties to echo in CSV and JSON Lines outputs.
fn feature_item(index: usize, feature: Value) -> Item {
    let mut building = crate::events::geojson::building(index, &feature);
    if let Some(Value::Object(properties)) = feature.get("properties") {
        building.properties = properties.clone();
    }
    Item {
        building,
        source: Source::Feature(feature),
    }
}

/// What a CSV output repeats of the input before the prediction's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// A CSV input's header: every row is echoed field for field.
    Columns(Vec<String>),
    /// A JSON input: `id`, `lat`, `lon`, and the other fields as one JSON `properties` column.
    Json,
}

/// Why a building file cannot be read or written. A bad building is not one of these: it is
/// that building's error in the output, and the run goes on.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not a file of the kind its name says, or not one this run can use.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl FileError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn invalid(path: &Path, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// A building's id as text, the form ids are compared in when resuming (a CSV output holds
/// `42` where the input had the number 42).
pub fn id_key(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn formats_come_from_the_extension_and_unknown_ones_say_what_works() {
        assert_eq!(
            InputFormat::of(Path::new("a/B.CSV")).unwrap(),
            InputFormat::Csv
        );
        assert_eq!(
            InputFormat::of(Path::new("x.geojson")).unwrap(),
            InputFormat::Json
        );
        assert_eq!(
            InputFormat::of(Path::new("x.ndjson")).unwrap(),
            InputFormat::JsonLines
        );
        let err = InputFormat::of(Path::new("x.txt")).unwrap_err().to_string();
        assert!(err.starts_with("x.txt: cannot tell"), "{err}");
        assert!(err.contains(".jsonl"), "{err}");
        assert_eq!(
            OutputFormat::of(Path::new("o.jsonl")).unwrap(),
            OutputFormat::JsonLines
        );
        let err = OutputFormat::of(Path::new("o.json"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(".geojson") && err.contains(".jsonl"), "{err}");
    }

    #[test]
    fn ids_compare_as_text() {
        assert_eq!(id_key(&json!("b1")), "b1");
        assert_eq!(id_key(&json!(42)), "42");
        assert_eq!(id_key(&json!(4.5)), "4.5");
    }
}
