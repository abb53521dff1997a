//! CSV registers: a header naming a latitude and a longitude column, one register point per
//! row, every column (the position's too) kept as the record. Comma-separated UTF-8 with RFC
//! 4180 quoting; a byte-order mark is ignored, blank lines are skipped.

use csv::{ErrorKind, StringRecord};

use super::records::Records;
use super::rows::{ParseError, Parsed, Row, check_position};

/// Header names accepted for the position, compared without case or surrounding spaces.
pub const LAT_COLUMNS: [&str; 2] = ["lat", "latitude"];
pub const LON_COLUMNS: [&str; 4] = ["lon", "lng", "long", "longitude"];

/// Parses the whole file; the first bad row fails it unless `skip_bad_rows`.
pub fn parse(bytes: &[u8], skip_bad_rows: bool) -> Result<Parsed, ParseError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        // Rows with the wrong number of fields are reported here, with their line, rather than
        // as the reader's generic error.
        .flexible(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| ParseError::at(Row::Line(1), describe(&e)))?;
    let columns: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    if columns.iter().all(String::is_empty) {
        return Err(ParseError::document(
            "the register is empty: expected a header line naming lat and lon columns",
        ));
    }
    let lat = find(&columns, &LAT_COLUMNS)?;
    let lon = find(&columns, &LON_COLUMNS)?;

    let mut parsed = Parsed::new(Records::table(columns.clone()), skip_bad_rows);
    let mut row = StringRecord::new();
    loop {
        let line = match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => row.position().map_or(0, csv::Position::line),
            Err(e) => {
                let line = e.position().map_or(0, csv::Position::line);
                parsed
                    .bad_rows
                    .handle(ParseError::at(Row::Line(line), describe(&e)))?;
                continue;
            }
        };
        match position(&row, &columns, lat, lon) {
            Ok(position) => {
                let record = parsed.next_record()?;
                parsed
                    .records
                    .push_row(row.iter())
                    .map_err(ParseError::document)?;
                parsed.points.push((position, record));
            }
            Err(reason) => parsed
                .bad_rows
                .handle(ParseError::at(Row::Line(line), reason))?,
        }
    }
    Ok(parsed)
}

/// The column holding one of `names`; the error lists what the header has.
fn find(columns: &[String], names: &[&str]) -> Result<usize, ParseError> {
    columns
        .iter()
        .position(|c| names.iter().any(|n| c.eq_ignore_ascii_case(n)))
        .ok_or_else(|| {
            ParseError::at(
                Row::Line(1),
                format!(
                    "no {} column (accepted names: {}); the header has: {}",
                    names[0],
                    names.join(", "),
                    columns.join(", ")
                ),
            )
        })
}

/// The row's position, or why it has none.
fn position(
    row: &StringRecord,
    columns: &[String],
    lat: usize,
    lon: usize,
) -> Result<[f64; 2], String> {
    if row.len() != columns.len() {
        return Err(format!(
            "{} fields, but the header has {}",
            row.len(),
            columns.len()
        ));
    }
    let number = |column: usize| {
        let raw = row[column].trim();
        if raw.is_empty() {
            return Err(format!("{} is empty", columns[column]));
        }
        raw.parse::<f64>()
            .map_err(|_| format!("{} {raw:?} is not a number", columns[column]))
    };
    check_position(number(lat)?, number(lon)?)
}

/// The reader's error in a person's words (its own message repeats the line).
fn describe(error: &csv::Error) -> String {
    match error.kind() {
        ErrorKind::Utf8 { err, .. } => format!("field {} is not UTF-8 text", err.field() + 1),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(text: &str) -> Parsed {
        parse(text.as_bytes(), false).unwrap()
    }

    fn err(text: &str) -> ParseError {
        parse(text.as_bytes(), false).err().unwrap()
    }

    #[test]
    fn every_column_is_kept_and_the_position_is_found_by_name() {
        let parsed = ok("\u{feff}id, Latitude ,LNG,address\n\
                         A-1,52.2297,21.0122,\"ul. Marszałkowska 1, Warszawa\"\n\
                         \n\
                         A-2, 50.06 ,19.94,\n");
        assert_eq!(
            parsed.points,
            vec![([21.0122, 52.2297], 0), ([19.94, 50.06], 1)]
        );
        assert_eq!(
            parsed.records.get(0),
            json!({"id": "A-1", "Latitude": "52.2297", "LNG": "21.0122",
                   "address": "ul. Marszałkowska 1, Warszawa"})
        );
        assert_eq!(parsed.records.get(1)["Latitude"], " 50.06 ");
        assert_eq!(parsed.bad_rows.count, 0);
    }

    #[test]
    fn missing_columns_fail_with_what_the_header_has() {
        let e = err("id,lat,x\n1,52,21\n");
        assert_eq!(e.row, Some(Row::Line(1)));
        assert!(e.reason.contains("no lon column"), "{e}");
        assert!(e.reason.contains("id, lat, x"), "{e}");
        assert_eq!(err("").row, None);
    }

    #[test]
    fn bad_rows_fail_with_their_line_and_reason() {
        let e = err("id,lat,lon\n1,52.1,21.0\n2,abc,21.0\n");
        assert_eq!(e.to_string(), "line 3: lat \"abc\" is not a number");
        let e = err("id,lat,lon\n1,52.1,21.0\n2,52.2\n");
        assert_eq!(e.to_string(), "line 3: 2 fields, but the header has 3");
        let e = err("id,lat,lon\n\"multi\nline\",52.1,21.0\n3,91,21\n");
        assert_eq!(e.to_string(), "line 4: lat 91 is outside -90..90");
        let e = err("id,lat,lon\n1,52.1,\n");
        assert_eq!(e.to_string(), "line 2: lon is empty");
        let e = err("id,lat,lon\n1,52.1,NaN\n");
        assert_eq!(e.to_string(), "line 2: lon NaN is outside -180..180");
        let e = parse(b"id,lat,lon\n\xff,52.1,21\n", false).err().unwrap();
        assert_eq!(e.to_string(), "line 2: field 1 is not UTF-8 text");
    }

    #[test]
    fn skipped_bad_rows_are_counted_and_the_good_ones_kept() {
        let text = "id,lat,lon\n1,52.1,21.0\n2,x,21\n3,52.3\n4,52.4,21.4\n";
        let parsed = parse(text.as_bytes(), true).unwrap();
        assert_eq!(parsed.records.len(), 2);
        assert_eq!(parsed.points[1], ([21.4, 52.4], 1));
        assert_eq!(parsed.records.get(1)["id"], "4");
        assert_eq!(parsed.bad_rows.count, 2);
        assert_eq!(parsed.bad_rows.examples[0].row, Some(Row::Line(3)));
        assert_eq!(parsed.bad_rows.examples[1].row, Some(Row::Line(4)));
    }
}
