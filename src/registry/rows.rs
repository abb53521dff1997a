//! What the two parsers share: where a bad row is, the skip-or-fail policy for bad rows, and
//! the parsed register they hand to the index.

use std::fmt;

use super::index::{Position, Rings};
use super::records::Records;

/// Where in the file a problem is, in the words a person fixing the file needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Row {
    /// A CSV line, counted from 1 (the header is line 1).
    Line(u64),
    /// A GeoJSON feature, by its index in `features` (from 0, as a JSON path would say).
    Feature(usize),
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Line(line) => write!(f, "line {line}"),
            Self::Feature(i) => write!(f, "features[{i}]"),
        }
    }
}

/// Why the register cannot be used: one row, or the whole document (`row: None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub row: Option<Row>,
    pub reason: String,
}

impl ParseError {
    pub fn at(row: Row, reason: impl Into<String>) -> Self {
        Self {
            row: Some(row),
            reason: reason.into(),
        }
    }

    pub fn document(reason: impl Into<String>) -> Self {
        Self {
            row: None,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.row {
            Some(row) => write!(f, "{row}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ParseError {}

/// How many bad rows to keep word of, for the load log.
const EXAMPLES: usize = 5;

/// Bad rows skipped under `REGISTRY_SKIP_BAD_ROWS=true`: how many, and the first few.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BadRows {
    skip: bool,
    pub count: usize,
    pub examples: Vec<ParseError>,
}

impl BadRows {
    pub fn new(skip: bool) -> Self {
        Self {
            skip,
            ..Self::default()
        }
    }

    /// Fails with `error` unless bad rows are skipped; then counts it.
    pub fn handle(&mut self, error: ParseError) -> Result<(), ParseError> {
        if !self.skip {
            return Err(error);
        }
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(error);
        }
        Ok(())
    }
}

/// A parsed register: geometry per record (record = index into `records`), and the records.
pub struct Parsed {
    pub points: Vec<(Position, u32)>,
    pub polygons: Vec<(Rings, u32)>,
    pub records: Records,
    pub bad_rows: BadRows,
}

impl Parsed {
    pub fn new(records: Records, skip_bad_rows: bool) -> Self {
        Self {
            points: Vec::new(),
            polygons: Vec::new(),
            records,
            bad_rows: BadRows::new(skip_bad_rows),
        }
    }

    /// The index the next record will get.
    pub fn next_record(&self) -> Result<u32, ParseError> {
        u32::try_from(self.records.len())
            .map_err(|_| ParseError::document("over 4 billion records: split the register"))
    }
}

/// A latitude and longitude in range, or why not (shared so both formats say it the same way).
pub fn check_position(lat: f64, lon: f64) -> Result<Position, String> {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Err(format!("lat {lat} is outside -90..90"));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Err(format!("lon {lon} is outside -180..180"));
    }
    Ok([lon, lat])
}
