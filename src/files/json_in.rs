//! JSON inputs of any size: a GeoJSON FeatureCollection (`features`) or a direct invoke's
//! `{"buildings": [...]}`, read as a stream. Only one array element is in memory at a time:
//! the document is walked by a serde visitor that hands each element on as soon as it is
//! parsed, and skips every other member unread.
//!
//! A syntax error stops the file where it is (the elements before it have been handed on);
//! a bad element is that building's error, as in a request.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::marker::PhantomData;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{FileError, Item, Source, feature_item};
use crate::request::parse_building;

/// Which array a document holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Array {
    /// GeoJSON `features`.
    Features,
    /// A direct invoke's `buildings`.
    Buildings,
}

/// Why the walk ended early on purpose (the consumer stopped), told apart from a real error.
const STOPPED: &str = "stopped by the reader's consumer";

/// Hands every building of the file at `path` to `emit`, in order, until it ends or `emit`
/// returns false.
pub fn for_each(path: &Path, mut emit: impl FnMut(Item) -> bool) -> Result<(), FileError> {
    let mut index = 0;
    walk::<Value>(path, |array, element| {
        let item = match array {
            Array::Features => feature_item(index, element),
            Array::Buildings => Item {
                building: parse_building(index, &element),
                source: Source::Fields,
            },
        };
        index += 1;
        emit(item)
    })
    .map(|_| ())
}

/// How many buildings the file holds, without building them (for progress).
pub fn count(path: &Path) -> Result<usize, FileError> {
    let mut n = 0;
    walk::<IgnoredAny>(path, |_, _| {
        n += 1;
        true
    })?;
    Ok(n)
}

/// Walks the document, handing each element of its one array to `each`.
fn walk<T>(path: &Path, mut each: impl FnMut(Array, T) -> bool) -> Result<Array, FileError>
where
    T: for<'de> Deserialize<'de>,
{
    let file = std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    if reader
        .fill_buf()
        .map_err(|e| FileError::io(path, e))?
        .starts_with(b"\xEF\xBB\xBF")
    {
        reader.consume(3);
    }
    let mut document = Document {
        each: &mut each,
        found: None,
        stopped: false,
        element: PhantomData,
    };
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let walked = deserializer
        .deserialize_map(&mut document)
        .and_then(|()| deserializer.end());
    match walked {
        Err(_) if document.stopped => {}
        Err(e) if e.is_io() => {
            return Err(FileError::io(path, std::io::Error::other(e.to_string())));
        }
        Err(e) => return Err(FileError::invalid(path, e.to_string())),
        Ok(()) => {}
    }
    document.found.ok_or_else(|| {
        FileError::invalid(
            path,
            "no \"features\" array (a GeoJSON FeatureCollection) or \"buildings\" array \
             (a direct invoke) in the document",
        )
    })
}

struct Document<'a, T, F> {
    each: &'a mut F,
    found: Option<Array>,
    stopped: bool,
    element: PhantomData<T>,
}

impl<'de, T, F> Visitor<'de> for &mut Document<'_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(Array, T) -> bool,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a JSON object: a GeoJSON FeatureCollection or a direct invoke {\"buildings\": [...]}",
        )
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let array = match key.as_str() {
                "features" => Array::Features,
                "buildings" => Array::Buildings,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if self.found.is_some() {
                return Err(de::Error::custom(
                    "the document has both \"features\" and \"buildings\" (or one twice): \
                     send one array of buildings",
                ));
            }
            self.found = Some(array);
            map.next_value_seed(Elements {
                document: &mut *self,
                array,
            })?;
        }
        Ok(())
    }
}

struct Elements<'d, 'a, T, F> {
    document: &'d mut Document<'a, T, F>,
    array: Array,
}

impl<'de, T, F> DeserializeSeed<'de> for Elements<'_, '_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(Array, T) -> bool,
{
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de, T, F> Visitor<'de> for Elements<'_, '_, T, F>
where
    T: Deserialize<'de>,
    F: FnMut(Array, T) -> bool,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.array {
            Array::Features => f.write_str("an array of GeoJSON features"),
            Array::Buildings => f.write_str("an array of buildings"),
        }
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        while let Some(element) = seq.next_element::<T>()? {
            if !(self.document.each)(self.array, element) {
                self.document.stopped = true;
                return Err(de::Error::custom(STOPPED));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use serde_json::json;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    fn items(text: &str) -> Result<Vec<Item>, FileError> {
        let f = file(text);
        let mut items = Vec::new();
        for_each(f.path(), |item| {
            items.push(item);
            true
        })?;
        assert_eq!(count(f.path())?, items.len());
        Ok(items)
    }

    #[test]
    fn features_come_one_by_one_with_ids_and_properties() {
        let items = items(
            r#"{"features": [
                {"type": "Feature", "id": "f1", "geometry": {"type": "Point", "coordinates": [21.0, 52.0]},
                 "properties": {"roof": "flat"}},
                {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[21.0, 52.0], [21.1, 52.0]]},
                 "properties": {"id": "p2"}},
                {"type": "Feature", "geometry": null}
              ], "type": "FeatureCollection", "name": "roofs"}"#,
        )
        .unwrap();
        assert_eq!(items.len(), 3);
        let b = &items[0].building;
        assert_eq!(
            (b.id.clone(), b.position.as_ref().unwrap().lat),
            (json!("f1"), 52.0)
        );
        assert_eq!(Value::Object(b.properties.clone()), json!({"roof": "flat"}));
        assert!(matches!(items[0].source, Source::Feature(_)));
        assert_eq!(items[1].building.id, json!("p2"));
        assert_eq!(
            items[1].building.position.as_ref().unwrap_err().code,
            ErrorCode::InvalidGeometry
        );
        assert_eq!(items[2].building.id, json!(2));
    }

    #[test]
    fn direct_invokes_give_their_buildings() {
        let items = items(
            "\u{feff}{\"other\": {\"deep\": [1, 2]}, \"buildings\": [{\"id\": \"b1\", \"lat\": 52.1, \"lon\": 21.0, \"a\": 1}, 7]}",
        )
        .unwrap();
        assert_eq!(items[0].building.properties["a"], 1);
        assert_eq!(items[0].source, Source::Fields);
        assert_eq!(
            items[1].building.position.as_ref().unwrap_err().code,
            ErrorCode::InvalidBuilding
        );
    }

    #[test]
    fn unusable_documents_say_why_and_where() {
        let cases = [
            ("[1, 2]", "invalid type: sequence, expected a JSON object"),
            ("{\"type\": \"FeatureCollection\"}", "no \"features\" array"),
            (
                "{\"features\": {}}",
                "expected an array of GeoJSON features",
            ),
            (
                "{\"features\": [], \"buildings\": []}",
                "both \"features\" and \"buildings\"",
            ),
            ("{\"buildings\": [{\"lat\": 1}, ", "EOF while parsing"),
            (
                "{\"buildings\": []} x",
                "trailing characters at line 1 column 19",
            ),
        ];
        for (text, want) in cases {
            let err = items(text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn the_consumer_can_stop_early() {
        let f = file(r#"{"buildings": [{"lat": 1, "lon": 1}, {"lat": 2, "lon": 2}, {"lat": 3"#);
        let mut seen = 0;
        for_each(f.path(), |_| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
}
