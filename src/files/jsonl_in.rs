//! JSON Lines inputs: one building a line, as a direct invoke's building object
//! (`{"id", "lat", "lon", …}`) or a GeoJSON Feature (`"type": "Feature"`). Blank lines are
//! skipped; a line that is not JSON is that building's error, naming the line.

use std::io::{BufRead, BufReader};
use std::path::Path;

use serde_json::Value;

use super::{FileError, Item, Source, feature_item};
use crate::error::{BuildingError, ErrorCode};
use crate::request::{BuildingInput, parse_building};

/// Hands every building of the file to `emit`, in order, until it ends or `emit` returns
/// false.
pub fn for_each(path: &Path, mut emit: impl FnMut(Item) -> bool) -> Result<(), FileError> {
    let mut index = 0;
    lines(path, |number, line| {
        let item = item(index, number, line);
        index += 1;
        emit(item)
    })
}

/// How many buildings (non-blank lines) the file holds.
pub fn count(path: &Path) -> Result<usize, FileError> {
    let mut n = 0;
    lines(path, |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// Calls `each(line number, text)` for every non-blank line.
fn lines(path: &Path, mut each: impl FnMut(u64, &[u8]) -> bool) -> Result<(), FileError> {
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| FileError::io(path, e))?;
        if read == 0 {
            return Ok(());
        }
        number += 1;
        let mut text = line.as_slice();
        if number == 1 {
            text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
        }
        if text.trim_ascii().is_empty() {
            continue;
        }
        if !each(number, text) {
            return Ok(());
        }
    }
}

fn item(index: usize, number: u64, line: &[u8]) -> Item {
    match serde_json::from_slice::<Value>(line) {
        Ok(value) if value.get("type").and_then(Value::as_str) == Some("Feature") => {
            feature_item(index, value)
        }
        Ok(value) => Item {
            building: parse_building(index, &value),
            source: Source::Fields,
        },
        Err(e) => Item {
            building: BuildingInput::failed(
                Value::from(index),
                BuildingError::new(
                    ErrorCode::InvalidBuilding,
                    format!("line {number} is not JSON: {e}"),
                ),
            ),
            source: Source::Fields,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    #[test]
    fn lines_are_buildings_or_features_and_bad_lines_are_their_own_errors() {
        let mut file = tempfile::Builder::new()
            .suffix(".jsonl")
            .tempfile()
            .unwrap();
        file.write_all(
            b"{\"id\": \"a\", \"lat\": 52.1, \"lon\": 21.0}\n\n{not json\n\
              {\"type\": \"Feature\", \"id\": 9, \"geometry\": {\"type\": \"Point\", \"coordinates\": [21.0, 52.0]}, \"properties\": {\"x\": 1}}\n\
              {\"lat\": 1, \"lon\": 2}",
        )
        .unwrap();
        let mut items = Vec::new();
        for_each(file.path(), |i| {
            items.push(i);
            true
        })
        .unwrap();
        assert_eq!(count(file.path()).unwrap(), 4);
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].building.id, json!("a"));
        let err = items[1].building.position.as_ref().unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidBuilding);
        assert!(
            err.message.starts_with("line 3 is not JSON: "),
            "{}",
            err.message
        );
        assert_eq!(items[1].building.id, json!(1));
        assert_eq!(items[2].building.id, json!(9));
        assert_eq!(items[2].building.properties["x"], 1);
        assert!(matches!(items[2].source, Source::Feature(_)));
        // The last line has no newline and still counts; its id is its index.
        assert_eq!(items[3].building.id, json!(3));
        assert!(items[3].building.position.is_ok());
    }
}
