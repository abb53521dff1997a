//! CSV inputs: a header line naming the position columns as registers do (`lat`/`latitude`,
//! `lon`/`lng`/`long`/`longitude`, any case) and optionally `id`; one building a row. Every
//! value is text, so `lat`/`lon` are read as numbers here (as a Step Functions CSV reader's
//! items are). A row that cannot be a building (wrong field count, not UTF-8, a bad number)
//! is that building's error; only an unusable header refuses the file.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use serde_json::{Map, Number, Value};

use super::{FileError, Item, Source};
use crate::error::{BuildingError, ErrorCode};
use crate::geo::LatLon;
use crate::registry::{LAT_COLUMNS, LON_COLUMNS};
use crate::request::BuildingInput;

/// An opened CSV input whose header has been read and checked.
pub struct CsvInput {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    pub columns: Vec<String>,
    id: Option<usize>,
    lat: usize,
    lon: usize,
}

/// Opens `path` and checks its header.
pub fn open(path: &Path) -> Result<CsvInput, FileError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut buffered = BufReader::new(file);
    let bom = buffered
        .fill_buf()
        .map_err(|e| FileError::io(path, e))?
        .starts_with(b"\xEF\xBB\xBF");
    if bom {
        buffered.consume(3);
    }
    let boxed: Box<dyn Read + Send> = Box::new(buffered);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(boxed);
    let header = reader
        .byte_headers()
        .map_err(|e| FileError::invalid(path, format!("line 1: {e}")))?
        .clone();
    let columns: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).trim().to_string())
        .collect();
    if columns.iter().all(String::is_empty) {
        return Err(FileError::invalid(
            path,
            "the file is empty: expected a header line naming lat and lon columns, e.g. id,lat,lon",
        ));
    }
    let find = |names: &[&str]| {
        columns
            .iter()
            .position(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
    };
    let missing = |names: &[&str]| {
        FileError::invalid(
            path,
            format!(
                "line 1: no {} column (accepted names: {}); the header has: {}",
                names[0],
                names.join(", "),
                columns.join(", ")
            ),
        )
    };
    let lat = find(&LAT_COLUMNS).ok_or_else(|| missing(&LAT_COLUMNS))?;
    let lon = find(&LON_COLUMNS).ok_or_else(|| missing(&LON_COLUMNS))?;
    let id = find(&["id"]);
    Ok(CsvInput {
        path: path.to_path_buf(),
        reader,
        id,
        lat,
        lon,
        columns,
    })
}

impl CsvInput {
    /// Hands every row to `emit`, in order, until the file ends or `emit` returns false.
    /// Only an I/O failure is an error; bad rows are buildings with their error.
    pub fn for_each(mut self, mut emit: impl FnMut(Item) -> bool) -> Result<(), FileError> {
        let mut row = ByteRecord::new();
        let mut index = 0;
        loop {
            let read = self.reader.read_byte_record(&mut row);
            let item = match read {
                Ok(false) => return Ok(()),
                Ok(true) => self.item(index, &row),
                Err(e) if e.is_io_error() => return Err(io_error(&self.path, e)),
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    failed(index, None, format!("line {line}: {e}"))
                }
            };
            index += 1;
            if !emit(item) {
                return Ok(());
            }
        }
    }

    /// Counts the rows (what [`CsvInput::for_each`] would hand out), for progress.
    pub fn count(mut self) -> Result<usize, FileError> {
        let mut row = ByteRecord::new();
        let mut rows = 0;
        loop {
            match self.reader.read_byte_record(&mut row) {
                Ok(false) => return Ok(rows),
                Ok(true) => rows += 1,
                Err(e) if e.is_io_error() => return Err(io_error(&self.path, e)),
                Err(_) => rows += 1,
            }
        }
    }

    fn item(&self, index: usize, row: &ByteRecord) -> Item {
        let line = row.position().map_or(0, csv::Position::line);
        let fields: Vec<String> = row
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect();
        let id = self
            .id
            .and_then(|c| fields.get(c))
            .map(|s| Value::String(s.trim().to_string()))
            .filter(|v| v != "");
        if let Some(bad) = row.iter().position(|f| std::str::from_utf8(f).is_err()) {
            let message = format!("line {line}: field {} is not UTF-8 text", bad + 1);
            return with_row(failed(index, id, message), fields);
        }
        if fields.len() != self.columns.len() {
            let message = format!(
                "line {line}: {} fields, but the header has {}",
                fields.len(),
                self.columns.len()
            );
            return with_row(failed(index, id, message), fields);
        }
        let (lat, lat_value) = coordinate(&self.columns[self.lat], &fields[self.lat]);
        let (lon, lon_value) = coordinate(&self.columns[self.lon], &fields[self.lon]);
        let position = lat.and_then(|lat| {
            let lon = lon?;
            LatLon::new(lat, lon).map_err(|e| BuildingError::new(ErrorCode::InvalidCoordinates, e))
        });
        let properties: Map<String, Value> = self
            .columns
            .iter()
            .zip(&fields)
            .enumerate()
            .filter(|(c, _)| Some(*c) != self.id && *c != self.lat && *c != self.lon)
            .map(|(_, (name, value))| (name.clone(), Value::String(value.clone())))
            .collect();
        let building = BuildingInput {
            id: id.unwrap_or_else(|| Value::from(index)),
            lat: lat_value,
            lon: lon_value,
            properties,
            position: position.map_err(|e| BuildingError {
                message: format!("line {line}: {}", e.message),
                ..e
            }),
        };
        Item {
            building,
            source: Source::Row(fields),
        }
    }
}

/// A coordinate's number (or why not) and the value to echo: the number when the text is
/// one, else the text as written; nothing for an empty field.
fn coordinate(name: &str, raw: &str) -> (Result<f64, BuildingError>, Option<Value>) {
    let text = raw.trim();
    let invalid = |m: String| BuildingError::new(ErrorCode::InvalidCoordinates, m);
    if text.is_empty() {
        return (Err(invalid(format!("{name} is empty"))), None);
    }
    match text.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(n) => (Ok(n.as_f64().unwrap_or(f64::NAN)), Some(Value::Number(n))),
        None => (
            Err(invalid(format!("{name} {text:?} is not a number"))),
            Some(Value::String(raw.to_string())),
        ),
    }
}

fn io_error(path: &Path, error: csv::Error) -> FileError {
    match error.into_kind() {
        csv::ErrorKind::Io(io) => FileError::io(path, io),
        other => FileError::invalid(path, format!("{other:?}")),
    }
}

fn failed(index: usize, id: Option<Value>, message: String) -> Item {
    Item {
        building: BuildingInput::failed(
            id.unwrap_or_else(|| Value::from(index)),
            BuildingError::new(ErrorCode::InvalidBuilding, message),
        ),
        source: Source::Row(Vec::new()),
    }
}

fn with_row(mut item: Item, fields: Vec<String>) -> Item {
    item.source = Source::Row(fields);
    item
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    fn read(text: &[u8]) -> Result<(Vec<String>, Vec<Item>), FileError> {
        let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
        file.write_all(text).unwrap();
        let input = open(file.path())?;
        let columns = input.columns.clone();
        let count = open(file.path())?.count()?;
        let mut items = Vec::new();
        input.for_each(|item| {
            items.push(item);
            true
        })?;
        assert_eq!(count, items.len());
        Ok((columns, items))
    }

    #[test]
    fn rows_become_buildings_with_their_other_columns_as_properties() {
        let (columns, items) = read(
            "\u{feff}Address,LAT,lng,id\n\"ul. Marszałkowska 1, Warszawa\",52.2297, 21.0122 ,b1\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(columns, ["Address", "LAT", "lng", "id"]);
        let b = &items[0].building;
        assert_eq!(b.id, json!("b1"));
        assert_eq!(b.position, Ok(LatLon::new(52.2297, 21.0122).unwrap()));
        assert_eq!(
            (b.lat.clone(), b.lon.clone()),
            (Some(json!(52.2297)), Some(json!(21.0122)))
        );
        assert_eq!(
            Value::Object(b.properties.clone()),
            json!({"Address": "ul. Marszałkowska 1, Warszawa"})
        );
        assert_eq!(
            items[0].source,
            Source::Row(vec![
                "ul. Marszałkowska 1, Warszawa".into(),
                "52.2297".into(),
                " 21.0122 ".into(),
                "b1".into()
            ])
        );
    }

    #[test]
    fn bad_rows_are_per_building_errors_naming_their_line() {
        let (_, items) = read(
            b"id,lat,lon\na,52.1,21.0\nb,north,21.0\nc,,21.0\nd,52.1\ne,95,21.0\n,52.1,21.0\nf,52.1,\xff\n",
        )
        .unwrap();
        let errors: Vec<(Value, Option<(ErrorCode, String)>)> = items
            .iter()
            .map(|i| {
                (
                    i.building.id.clone(),
                    i.building
                        .position
                        .as_ref()
                        .err()
                        .map(|e| (e.code, e.message.clone())),
                )
            })
            .collect();
        assert_eq!(errors[0], (json!("a"), None));
        let expect = [
            (
                ErrorCode::InvalidCoordinates,
                "line 3: lat \"north\" is not a number",
            ),
            (ErrorCode::InvalidCoordinates, "line 4: lat is empty"),
            (
                ErrorCode::InvalidBuilding,
                "line 5: 2 fields, but the header has 3",
            ),
            (ErrorCode::InvalidCoordinates, "line 6: lat 95 is outside"),
        ];
        for (i, (code, start)) in expect.iter().enumerate() {
            let (c, m) = errors[i + 1].1.clone().unwrap();
            assert_eq!(c, *code, "{m}");
            assert!(m.starts_with(start), "{m}");
        }
        // No id: the building's index in the file.
        assert_eq!(errors[5], (json!(5), None));
        let (c, m) = errors[6].1.clone().unwrap();
        assert_eq!(
            (c, m.as_str()),
            (
                ErrorCode::InvalidBuilding,
                "line 8: field 3 is not UTF-8 text"
            )
        );
        assert_eq!(items[4].building.lat, Some(json!(95.0)));
    }

    #[test]
    fn a_header_without_positions_refuses_the_file() {
        let err = read(b"id,x,y\n1,2,3\n").err().unwrap().to_string();
        assert!(
            err.contains(
                "line 1: no lat column (accepted names: lat, latitude); the header has: id, x, y"
            ),
            "{err}"
        );
        let err = read(b"").err().unwrap().to_string();
        assert!(err.contains("the file is empty"), "{err}");
    }
}
