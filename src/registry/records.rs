//! The register's own data for each record (CSV columns, GeoJSON properties), kept as compact
//! text and turned into JSON only for buildings that match.
//!
//! Why text and not `serde_json::Value`s: a `Map` per record costs hundreds of bytes and one
//! allocation per field; a million records would take gigabytes. Here a record costs its text
//! plus four bytes per field (CSV) or per record (GeoJSON), in two allocations overall.

use serde_json::{Map, Value};

/// Every record's fields, back to back in one string.
pub struct Records {
    /// CSV: the header's column names (a record's values are strings, as in the file).
    /// GeoJSON: `None`, and each record is one JSON object's text.
    columns: Option<Vec<String>>,
    text: String,
    /// End offset in `text` of each field (CSV: `columns.len()` per record) or of each record.
    ends: Vec<u32>,
}

impl Records {
    /// An empty table with these column names.
    pub fn table(columns: Vec<String>) -> Self {
        Self {
            columns: Some(columns),
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// An empty store of JSON objects.
    pub fn json() -> Self {
        Self {
            columns: None,
            text: String::new(),
            ends: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        match &self.columns {
            Some(columns) if columns.is_empty() => 0,
            Some(columns) => self.ends.len() / columns.len(),
            None => self.ends.len(),
        }
    }

    /// Appends one CSV row; it must have one field per column (the parser checks first).
    pub fn push_row<'a>(
        &mut self,
        fields: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        for field in fields {
            self.push_text(field)?;
        }
        Ok(())
    }

    /// Appends one record given as the text of a JSON object.
    pub fn push_json(&mut self, object: &str) -> Result<(), String> {
        self.push_text(object)
    }

    fn push_text(&mut self, text: &str) -> Result<(), String> {
        self.text.push_str(text);
        let end = u32::try_from(self.text.len())
            .map_err(|_| "the register's text is over 4 GiB: split it".to_string())?;
        self.ends.push(end);
        Ok(())
    }

    /// Record `i` as a JSON object (CSV values are strings, as in the file).
    pub fn get(&self, i: usize) -> Value {
        match &self.columns {
            Some(columns) => {
                let first = i * columns.len();
                let object: Map<String, Value> = columns
                    .iter()
                    .enumerate()
                    .map(|(c, name)| (name.clone(), Value::from(self.slice(first + c))))
                    .collect();
                Value::Object(object)
            }
            // The text was a JSON object when it was stored, so it parses back.
            None => serde_json::from_str(self.slice(i)).unwrap_or_default(),
        }
    }

    fn slice(&self, field: usize) -> &str {
        let start = match field {
            0 => 0,
            n => self.ends[n - 1] as usize,
        };
        &self.text[start..self.ends[field] as usize]
    }

    /// Heap bytes held (text and offsets), for the load log.
    pub fn heap_bytes(&self) -> usize {
        self.text.capacity() + self.ends.capacity() * std::mem::size_of::<u32>()
    }

    /// Gives back spare capacity once loading is done.
    pub fn shrink_to_fit(&mut self) {
        self.text.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_rows_come_back_as_string_objects_in_column_order() {
        let mut records = Records::table(vec!["id".into(), "lat".into(), "note".into()]);
        records.push_row(["a1", "52.1", ""]).unwrap();
        records
            .push_row(["a2", "52.2", "żółw, \"quoted\""])
            .unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records.get(0),
            json!({"id": "a1", "lat": "52.1", "note": ""})
        );
        assert_eq!(
            records.get(1),
            json!({"id": "a2", "lat": "52.2", "note": "żółw, \"quoted\""})
        );
        let keys: Vec<_> = records
            .get(1)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["id", "lat", "note"]);
    }

    #[test]
    fn json_records_round_trip() {
        let mut records = Records::json();
        records.push_json(r#"{"id":7,"year":1975}"#).unwrap();
        records.push_json("{}").unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records.get(0), json!({"id": 7, "year": 1975}));
        assert_eq!(records.get(1), json!({}));
    }
}
