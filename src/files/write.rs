//! Outputs written as a run goes: each chunk's buildings are written and flushed before the
//! next chunk is predicted, so a stopped run leaves a valid file of everything done so far.
//!
//! - **JSON Lines**: one direct-answer prediction object a line
//!   ([`crate::answer::direct_prediction`]).
//! - **GeoJSON**: a FeatureCollection with one feature a line: the input's own feature
//!   annotated as a GeoJSON request's answer is ([`crate::events::geojson::annotate`]), or a
//!   Point feature for a building from a CSV or JSON input. Lines after the first start with
//!   the comma, so every line but the first and the last is one whole feature, which is what
//!   lets a run be resumed. The closing line carries `failed` and `model`.
//! - **CSV**: the input's columns as written (a JSON input's `id`, `lat`, `lon` and its other
//!   fields as one JSON `properties` column), then `label`, `score`, one `p_<label>` column per
//!   label, the register's `registry_listed`, `registry_distance_m`, `registry_record` when one
//!   is configured, and `error_code`, `error_message`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::resume::Existing;
use super::{Echo, FileError, OutputFormat, Source, id_key};
use crate::answer::{direct_prediction, scored};
use crate::events::geojson::annotate;
use crate::outcome::{ModelInfo, Outcome};
use crate::request::BuildingInput;

/// The first line of a GeoJSON output.
pub const GEOJSON_OPENING: &str = r#"{"type":"FeatureCollection","features":["#;

/// Where the output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Stdout,
    File(PathBuf),
}

impl Destination {
    /// For messages.
    pub fn display(&self) -> String {
        match self {
            Self::Stdout => "stdout".into(),
            Self::File(path) => path.display().to_string(),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Self::Stdout => Path::new("stdout"),
            Self::File(path) => path,
        }
    }
}

/// An output being written.
pub struct Writer {
    out: Box<dyn Write + Send>,
    destination: Destination,
    format: OutputFormat,
    model: ModelInfo,
    csv: Option<CsvLayout>,
    /// Buildings in the output, a resumed run's earlier ones included.
    written: usize,
    /// Of those, the ones answered with an error (the GeoJSON closing line's `failed`).
    failed: usize,
}

/// What a CSV output's columns are.
struct CsvLayout {
    echo: Echo,
    /// The input has no `id` column: one is written first.
    add_id: bool,
    header: Vec<String>,
    with_registry: bool,
}

impl Writer {
    /// Creates the output, or continues `resume`'s (cut back to its last whole building).
    pub fn create(
        destination: Destination,
        format: OutputFormat,
        echo: &Echo,
        model: &ModelInfo,
        with_registry: bool,
        resume: Option<&Existing>,
    ) -> Result<Self, FileError> {
        let csv = (format == OutputFormat::Csv).then(|| csv_layout(echo, model, with_registry));
        let path = destination.path().to_path_buf();
        if let (Some(existing), Some(layout)) = (resume, &csv)
            && let Some(header) = &existing.header
            && *header != layout.header
        {
            return Err(FileError::invalid(
                &path,
                format!(
                    "its columns ({}) are not this run's ({}): it was written from another \
                     input or model; write to a new file instead of resuming",
                    header.join(","),
                    layout.header.join(",")
                ),
            ));
        }
        let out: Box<dyn Write + Send> = match &destination {
            Destination::Stdout => Box::new(BufWriter::new(std::io::stdout())),
            Destination::File(path) => {
                Box::new(BufWriter::with_capacity(1 << 16, open_file(path, resume)?))
            }
        };
        let mut writer = Self {
            out,
            destination,
            format,
            model: model.clone(),
            csv,
            written: resume.map_or(0, |e| e.ids.len()),
            failed: resume.map_or(0, |e| e.failed),
        };
        let started = resume.is_some_and(|e| e.started);
        if !started {
            match writer.format {
                OutputFormat::GeoJson => writeln!(writer.out, "{GEOJSON_OPENING}"),
                OutputFormat::Csv => {
                    let header = writer.csv.as_ref().map(|c| c.header.clone());
                    writer.csv_record(header.unwrap_or_default())
                }
                OutputFormat::JsonLines => Ok(()),
            }
            .map_err(|e| writer.error(e))?;
        }
        Ok(writer)
    }

    /// Buildings in the output so far.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes one chunk (`outcomes[i]` answers `buildings[i]`, read with `sources[i]`) and
    /// flushes it.
    pub fn write(
        &mut self,
        buildings: &[BuildingInput],
        sources: &[Source],
        outcomes: &[Outcome],
    ) -> Result<(), FileError> {
        for ((building, source), outcome) in buildings.iter().zip(sources).zip(outcomes) {
            self.one(building, source, outcome)
                .map_err(|e| self.error(e))?;
            self.written += 1;
            self.failed += usize::from(outcome.is_err());
        }
        self.out.flush().map_err(|e| self.error(e))
    }

    /// Ends the output (GeoJSON's closing line) and flushes it.
    pub fn finish(mut self) -> Result<(), FileError> {
        if self.format == OutputFormat::GeoJson {
            let closing = json!({"failed": self.failed, "model": self.model});
            let members = closing.to_string();
            // `{"failed":…}` without its braces, after the features array.
            let members = &members[1..members.len() - 1];
            writeln!(self.out, "],{members}}}").map_err(|e| self.error(e))?;
        }
        self.out.flush().map_err(|e| self.error(e))
    }

    fn one(
        &mut self,
        building: &BuildingInput,
        source: &Source,
        outcome: &Outcome,
    ) -> std::io::Result<()> {
        match self.format {
            OutputFormat::JsonLines => {
                let line = direct_prediction(&self.model, building, outcome);
                serde_json::to_writer(&mut self.out, &line)?;
                self.out.write_all(b"\n")
            }
            OutputFormat::GeoJson => {
                let feature = annotate(feature_of(building, source), &self.model, outcome);
                if self.written > 0 {
                    self.out.write_all(b",")?;
                }
                serde_json::to_writer(&mut self.out, &feature)?;
                self.out.write_all(b"\n")
            }
            OutputFormat::Csv => {
                let record = self.csv_row(building, source, outcome);
                self.csv_record(record)
            }
        }
    }

    fn csv_row(&self, building: &BuildingInput, source: &Source, outcome: &Outcome) -> Vec<String> {
        let layout = self.csv.as_ref().expect("a CSV output has a layout");
        let mut record = Vec::with_capacity(layout.header.len());
        match &layout.echo {
            Echo::Columns(columns) => {
                if layout.add_id {
                    record.push(id_key(&building.id));
                }
                let fields = match source {
                    Source::Row(fields) => fields.as_slice(),
                    _ => &[],
                };
                record
                    .extend((0..columns.len()).map(|c| fields.get(c).cloned().unwrap_or_default()));
            }
            Echo::Json => {
                record.push(id_key(&building.id));
                for value in [&building.lat, &building.lon] {
                    record.push(value.as_ref().map(text).unwrap_or_default());
                }
                record.push(if building.properties.is_empty() {
                    String::new()
                } else {
                    Value::Object(building.properties.clone()).to_string()
                });
            }
        }
        let labels = &self.model.labels;
        match outcome {
            Ok(s) => {
                let fields = scored(&self.model, s);
                record.push(s.label.clone());
                record.push(text(&fields["score"]));
                record.extend(labels.iter().map(|l| text(&fields["probabilities"][l])));
                if layout.with_registry {
                    let listing = fields.get("registry").cloned().unwrap_or(Value::Null);
                    record.push(text(&listing["listed"]));
                    record.push(text(&listing["distance_m"]));
                    record.push(text(&listing["record"]));
                }
                record.extend([String::new(), String::new()]);
            }
            Err(error) => {
                record.extend(std::iter::repeat_n(String::new(), 2 + labels.len()));
                if layout.with_registry {
                    record.extend(std::iter::repeat_n(String::new(), 3));
                }
                record.push(error.code.as_str().to_string());
                record.push(error.message.clone());
            }
        }
        record
    }

    fn csv_record(&mut self, record: Vec<String>) -> std::io::Result<()> {
        let mut line = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        line.write_record(&record)?;
        let bytes = line.into_inner().map_err(|e| e.into_error())?;
        self.out.write_all(&bytes)
    }

    fn error(&self, error: std::io::Error) -> FileError {
        FileError::io(self.destination.path(), error)
    }
}

/// Opens the output: created afresh, or cut back to `resume`'s last whole building.
fn open_file(path: &Path, resume: Option<&Existing>) -> Result<File, FileError> {
    let io = |e| FileError::io(path, e);
    match resume {
        None => File::create(path).map_err(io),
        Some(existing) => {
            let mut file = OpenOptions::new().write(true).open(path).map_err(io)?;
            file.set_len(existing.valid_len).map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
            Ok(file)
        }
    }
}

/// The CSV header: the input's columns (or `id,lat,lon,properties`), then the prediction's.
/// A prediction column whose name the input already uses is written `predicted_<name>`.
fn csv_layout(echo: &Echo, model: &ModelInfo, with_registry: bool) -> CsvLayout {
    let (mut header, add_id) = match echo {
        Echo::Columns(columns) => {
            let add_id = !columns.iter().any(|c| c.eq_ignore_ascii_case("id"));
            let mut header = if add_id {
                vec!["id".to_string()]
            } else {
                Vec::new()
            };
            header.extend(columns.iter().cloned());
            (header, add_id)
        }
        Echo::Json => (
            ["id", "lat", "lon", "properties"]
                .map(String::from)
                .to_vec(),
            false,
        ),
    };
    let mut ours: Vec<String> = vec!["label".into(), "score".into()];
    ours.extend(model.labels.iter().map(|l| format!("p_{l}")));
    if with_registry {
        ours.extend(
            ["registry_listed", "registry_distance_m", "registry_record"].map(String::from),
        );
    }
    ours.extend(["error_code", "error_message"].map(String::from));
    for name in ours {
        let taken = header.iter().any(|h| h.eq_ignore_ascii_case(&name));
        header.push(if taken {
            format!("predicted_{name}")
        } else {
            name
        });
    }
    CsvLayout {
        echo: echo.clone(),
        add_id,
        header,
        with_registry,
    }
}

/// The building as a GeoJSON feature: the input's own, or a Point at its position.
fn feature_of(building: &BuildingInput, source: &Source) -> Value {
    if let Source::Feature(feature) = source {
        return feature.clone();
    }
    let geometry = match &building.position {
        Ok(at) => json!({"type": "Point", "coordinates": [at.lon, at.lat]}),
        Err(_) => Value::Null,
    };
    let mut feature = Map::new();
    feature.insert("type".into(), json!("Feature"));
    feature.insert("id".into(), building.id.clone());
    feature.insert("geometry".into(), geometry);
    feature.insert(
        "properties".into(),
        Value::Object(building.properties.clone()),
    );
    Value::Object(feature)
}

/// A JSON value as a CSV field: strings as they are, null as nothing, the rest as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
