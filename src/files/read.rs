//! An input file opened for a run: its format checked up front (a CSV header without
//! positions fails before the model loads), counted for progress, then read on its own thread
//! into a bounded channel that the run takes chunks from. The channel's bound is the
//! back-pressure that keeps a run's memory flat whatever the file's size.

use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use super::{Echo, FileError, InputFormat, Item, csv_in, json_in, jsonl_in};

/// An input whose format is known and whose header (CSV) is usable.
#[derive(Debug, Clone)]
pub struct Input {
    pub path: PathBuf,
    pub format: InputFormat,
    /// A CSV input's header.
    columns: Option<Vec<String>>,
}

/// Opens `path` far enough to know it can be read.
pub fn open(path: &Path) -> Result<Input, FileError> {
    let format = InputFormat::of(path)?;
    let columns = match format {
        InputFormat::Csv => Some(csv_in::open(path)?.columns),
        InputFormat::Json | InputFormat::JsonLines => {
            std::fs::File::open(path).map_err(|e| FileError::io(path, e))?;
            None
        }
    };
    Ok(Input {
        path: path.to_path_buf(),
        format,
        columns,
    })
}

impl Input {
    /// What a CSV output repeats of this input.
    pub fn echo(&self) -> Echo {
        match &self.columns {
            Some(columns) => Echo::Columns(columns.clone()),
            None => Echo::Json,
        }
    }

    /// How many buildings the file holds; reads it through once (blocking). A JSON input's
    /// syntax errors surface here, before anything is predicted.
    pub fn count(&self) -> Result<usize, FileError> {
        match self.format {
            InputFormat::Csv => csv_in::open(&self.path)?.count(),
            InputFormat::Json => json_in::count(&self.path),
            InputFormat::JsonLines => jsonl_in::count(&self.path),
        }
    }

    /// Starts reading on a thread of its own; at most `capacity` buildings wait in memory.
    pub fn feed(&self, capacity: usize) -> Feed {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (path, format) = (self.path.clone(), self.format);
        std::thread::spawn(move || {
            let emit = |item: Item| tx.blocking_send(Ok(item)).is_ok();
            let read = match format {
                InputFormat::Csv => csv_in::open(&path).and_then(|csv| csv.for_each(emit)),
                InputFormat::Json => json_in::for_each(&path, emit),
                InputFormat::JsonLines => jsonl_in::for_each(&path, emit),
            };
            if let Err(error) = read {
                let _ = tx.blocking_send(Err(error));
            }
        });
        Feed { rx, failed: None }
    }
}

/// The buildings of an input, in order, as they are read.
pub struct Feed {
    rx: mpsc::Receiver<Result<Item, FileError>>,
    failed: Option<FileError>,
}

impl Feed {
    /// The next `max` buildings (fewer at the end; none once the file is done). A read error
    /// comes after the buildings read before it.
    pub async fn next_chunk(&mut self, max: usize) -> Result<Vec<Item>, FileError> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        let mut chunk = Vec::with_capacity(max);
        while chunk.len() < max {
            match self.rx.recv().await {
                Some(Ok(item)) => chunk.push(item),
                Some(Err(error)) if chunk.is_empty() => return Err(error),
                Some(Err(error)) => {
                    self.failed = Some(error);
                    break;
                }
                None => break,
            }
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn chunks_come_in_order_and_a_late_error_after_the_good_buildings() {
        let mut file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
        let buildings: Vec<String> = (0..7)
            .map(|i| format!("{{\"id\": {i}, \"lat\": 1, \"lon\": 1}}"))
            .collect();
        write!(file, "{{\"buildings\": [{}, oops", buildings.join(", ")).unwrap();
        let input = open(file.path()).unwrap();
        assert!(input.count().is_err());
        let mut feed = input.feed(2);
        let mut ids = Vec::new();
        loop {
            match feed.next_chunk(3).await {
                Ok(chunk) if chunk.is_empty() => panic!("the error was lost"),
                Ok(chunk) => ids.extend(chunk.into_iter().map(|i| i.building.id)),
                Err(e) => {
                    assert!(e.to_string().contains("expected value"), "{e}");
                    break;
                }
            }
        }
        assert_eq!(ids, (0..7).map(serde_json::Value::from).collect::<Vec<_>>());
    }
}
