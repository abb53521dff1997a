//! Reading back the output of a run that stopped (Ctrl-C, a crash, a lost machine), so the
//! next run can go on where it ended: which buildings it holds, in order, and where its last
//! whole building ends. A run writes buildings in input order and flushes each chunk, so
//! only the last line can be cut short (a crash while writing); it is dropped and written
//! again.
//!
//! Buildings are recognised by position *and* id: the output's first n ids must be the
//! input's first n, so repeated ids in the input are neither skipped twice nor lost, and an
//! output written from another input is refused rather than extended.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use serde_json::Value;

use super::write::GEOJSON_OPENING;
use super::{FileError, OutputFormat, id_key};
use crate::events::geojson;

/// What an earlier run left in the output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Existing {
    /// The buildings' ids, in output (= input) order.
    pub ids: Vec<String>,
    /// Bytes to keep: everything up to the end of the last whole building.
    pub valid_len: u64,
    /// The CSV header or the GeoJSON opening line is there.
    pub started: bool,
    /// A CSV output's header.
    pub header: Option<Vec<String>>,
    /// Buildings answered with an error.
    pub failed: usize,
}

/// The output at `path` as a run left it; `None` when there is none yet (or it is empty).
pub fn scan(path: &Path, format: OutputFormat) -> Result<Option<Existing>, FileError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FileError::io(path, e)),
    };
    if file.metadata().map_err(|e| FileError::io(path, e))?.len() == 0 {
        return Ok(None);
    }
    match format {
        OutputFormat::Csv => csv(path, file),
        OutputFormat::JsonLines | OutputFormat::GeoJson => lines(path, file, format),
    }
    .map(Some)
}

/// JSON Lines and GeoJSON outputs: one building a line.
fn lines(path: &Path, file: File, format: OutputFormat) -> Result<Existing, FileError> {
    let geojson = format == OutputFormat::GeoJson;
    let mut reader = BufReader::new(file);
    let mut existing = Existing::default();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| FileError::io(path, e))?;
        if read == 0 || !line.ends_with(b"\n") {
            // The end, or a last line cut short: written again.
            return Ok(existing);
        }
        number += 1;
        let text = line.trim_ascii();
        if geojson && number == 1 {
            if text != GEOJSON_OPENING.as_bytes() {
                return Err(not_ours(path, format, number));
            }
            existing.started = true;
        } else if geojson && text.starts_with(b"]") {
            // The closing line: written again at the end of this run.
            return Ok(existing);
        } else {
            let json = if geojson {
                text.strip_prefix(b",").unwrap_or(text)
            } else {
                text
            };
            let Ok(value) = serde_json::from_slice::<Value>(json) else {
                let rest = reader
                    .read_to_end(&mut Vec::new())
                    .map_err(|e| FileError::io(path, e))?;
                if rest == 0 && !text.is_empty() {
                    // A whole line that is not whole JSON can only be the cut one.
                    return Ok(existing);
                }
                return Err(not_ours(path, format, number));
            };
            let index = existing.ids.len();
            let (id, failed) = if geojson {
                let failed = value["properties"].get("error").is_some();
                (geojson::building(index, &value).id, failed)
            } else {
                (
                    value.get("id").cloned().unwrap_or(Value::Null),
                    value.get("error").is_some(),
                )
            };
            if id.is_null() {
                return Err(not_ours(path, format, number));
            }
            existing.ids.push(id_key(&id));
            existing.failed += usize::from(failed);
        }
        offset += read as u64;
        existing.valid_len = offset;
    }
}

/// CSV outputs: a header, then one record a building (a record may span lines when a field
/// holds a line break). A file that does not end with a line break lost its last record.
fn csv(path: &Path, mut file: File) -> Result<Existing, FileError> {
    let io = |e| FileError::io(path, e);
    let len = file.metadata().map_err(io)?.len();
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1)).map_err(io)?;
    file.read_exact(&mut last).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let cut = last[0] != b'\n';

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::new(file));
    let mut record = csv::StringRecord::new();
    let mut existing = Existing::default();
    let mut id_column = None;
    loop {
        let start = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => {
                existing.valid_len = len;
                return Ok(existing);
            }
            Err(_) | Ok(true) if cut && reader.position().byte() >= len => {
                // The last record, cut short: written again.
                existing.valid_len = start;
                return Ok(existing);
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                return Err(FileError::invalid(
                    path,
                    format!("line {line}: {e}; not resuming from a file this tool did not write"),
                ));
            }
            Ok(true) => {}
        }
        let Some(column) = id_column else {
            let header: Vec<String> = record.iter().map(String::from).collect();
            id_column = header.iter().position(|c| c.eq_ignore_ascii_case("id"));
            if id_column.is_none() {
                return Err(not_ours(path, OutputFormat::Csv, 1));
            }
            existing.header = Some(header);
            existing.started = true;
            continue;
        };
        existing
            .ids
            .push(record.get(column).unwrap_or_default().to_string());
        let code = existing
            .header
            .as_ref()
            .and_then(|h| h.iter().position(|c| c.ends_with("error_code")))
            .and_then(|c| record.get(c));
        existing.failed += usize::from(code.is_some_and(|c| !c.is_empty()));
    }
}

fn not_ours(path: &Path, format: OutputFormat, line: usize) -> FileError {
    FileError::invalid(
        path,
        format!(
            "line {line} is not what `bootstrap predict` writes as {}; not resuming from a \
             file this tool did not write",
            format.name()
        ),
    )
}
