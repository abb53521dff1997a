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
/// holds a line break). The last record must be byte for byte what the writer writes for its
/// fields: a record cut short, even inside a quoted field, is written again.
fn csv(path: &Path, file: File) -> Result<Existing, FileError> {
    let len = file.metadata().map_err(|e| FileError::io(path, e))?.len();
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(BufReader::new(file));
    let mut record = csv::StringRecord::new();
    let mut existing = Existing::default();
    let mut id_column = None;
    // The last record read: where it starts, its fields, whether it was an error.
    let mut last: Option<(u64, csv::StringRecord, bool)> = None;
    loop {
        let start = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(_) if reader.position().byte() >= len => {
                // Unreadable at the very end: the last record, cut short.
                last = None;
                existing.valid_len = start;
                break;
            }
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                return Err(FileError::invalid(
                    path,
                    format!("line {line}: {e}; not resuming from a file this tool did not write"),
                ));
            }
        }
        let mut failed = false;
        match id_column {
            None => {
                let header: Vec<String> = record.iter().map(String::from).collect();
                id_column = header.iter().position(|c| c.eq_ignore_ascii_case("id"));
                if id_column.is_none() {
                    return Err(not_ours(path, OutputFormat::Csv, 1));
                }
                existing.header = Some(header);
                existing.started = true;
            }
            Some(column) => {
                existing
                    .ids
                    .push(record.get(column).unwrap_or_default().to_string());
                let code = existing
                    .header
                    .as_ref()
                    .and_then(|h| h.iter().position(|c| c.ends_with("error_code")))
                    .and_then(|c| record.get(c));
                failed = code.is_some_and(|c| !c.is_empty());
                existing.failed += usize::from(failed);
            }
        }
        existing.valid_len = reader.position().byte();
        last = Some((start, record.clone(), failed));
    }
    if let Some((start, record, failed)) = last
        && !written_whole(path, start, len, &record)?
    {
        existing.valid_len = start;
        if existing.ids.pop().is_none() {
            // The header itself was cut: start afresh.
            existing = Existing::default();
        }
        existing.failed -= usize::from(failed);
    }
    Ok(existing)
}

/// The file from `start` to its end is exactly `record` as the writer writes it.
fn written_whole(
    path: &Path,
    start: u64,
    len: u64,
    record: &csv::StringRecord,
) -> Result<bool, FileError> {
    let io = |e| FileError::io(path, e);
    let mut line = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    line.write_record(record)
        .map_err(|e| FileError::invalid(path, format!("cannot re-encode its last record: {e}")))?;
    let expected = line
        .into_inner()
        .map_err(|e| FileError::invalid(path, e.to_string()))?;
    if expected.len() as u64 != len - start {
        return Ok(false);
    }
    let mut file = File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut tail = Vec::with_capacity(expected.len());
    file.read_to_end(&mut tail).map_err(io)?;
    Ok(tail == expected)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_text(text: &str, format: OutputFormat) -> Result<Option<Existing>, FileError> {
        let suffix = match format {
            OutputFormat::Csv => ".csv",
            OutputFormat::GeoJson => ".geojson",
            OutputFormat::JsonLines => ".jsonl",
        };
        let file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
        std::fs::write(file.path(), text).unwrap();
        scan(file.path(), format)
    }

    #[test]
    fn a_csv_record_spanning_lines_counts_once_and_a_cut_one_is_dropped() {
        let whole = "id,label,error_code\na,red,\n\"b\nc\",,image_invalid\n";
        let existing = scan_text(whole, OutputFormat::Csv).unwrap().unwrap();
        assert_eq!(existing.ids, ["a", "b\nc"]);
        assert_eq!(
            (existing.valid_len, existing.failed),
            (whole.len() as u64, 1)
        );
        assert_eq!(
            existing.header,
            Some(vec!["id".into(), "label".into(), "error_code".into()])
        );
        // Cut inside the quoted field: the record is written again, from its start.
        let cut = &whole[..whole.find("c\"").unwrap()];
        let existing = scan_text(cut, OutputFormat::Csv).unwrap().unwrap();
        assert_eq!(existing.ids, ["a"]);
        assert_eq!(
            existing.valid_len,
            "id,label,error_code\na,red,\n".len() as u64
        );
    }

    #[test]
    fn json_lines_and_geojson_keep_whole_lines_only() {
        let lines = "{\"id\":1,\"label\":\"x\"}\n{\"id\":\"b\",\"error\":{}}\n{\"id\":\"c\",\"la";
        let existing = scan_text(lines, OutputFormat::JsonLines).unwrap().unwrap();
        assert_eq!(
            (existing.ids.clone(), existing.failed),
            (vec!["1".into(), "b".into()], 1)
        );
        assert_eq!(existing.valid_len, (lines.len() - 13) as u64);

        let geojson = format!(
            "{GEOJSON_OPENING}\n{{\"type\":\"Feature\",\"id\":\"f\",\"properties\":{{}}}}\n\
             ,{{\"type\":\"Feature\",\"properties\":{{\"error\":{{}}}}}}\n],\"failed\":1}}\n"
        );
        let existing = scan_text(&geojson, OutputFormat::GeoJson).unwrap().unwrap();
        // The second feature has no id: its index, as the input's feature would have.
        assert_eq!(existing.ids, ["f", "1"]);
        assert!(existing.started);
        assert_eq!(
            existing.valid_len,
            (geojson.len() - "],\"failed\":1}\n".len()) as u64
        );
    }

    #[test]
    fn files_this_tool_did_not_write_are_refused() {
        for (text, format) in [
            ("x,y\n1,2\n", OutputFormat::Csv),
            ("{\"type\":\"FeatureCollection\"}\n", OutputFormat::GeoJson),
            ("not json\n{\"id\":1}\n", OutputFormat::JsonLines),
            ("{\"no_id\":1}\n", OutputFormat::JsonLines),
        ] {
            let err = scan_text(text, format).unwrap_err().to_string();
            assert!(
                err.contains("not resuming from a file this tool did not write"),
                "{err}"
            );
        }
        assert_eq!(scan_text("", OutputFormat::Csv).unwrap(), None);
    }
}
