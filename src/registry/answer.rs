//! The registry's part of an answer, in one place for every answer shape (direct invoke, and
//! any other shape built from the same outcomes): the `registry` field of one successful
//! prediction, and the request's `registry` summary. Without a registry both are absent.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Registry;
use crate::outcome::{Outcome, Scored};

/// Adds `"registry": {"listed", "record", "distance_m"}` to one prediction's JSON object when
/// the building was checked against a register.
pub fn add_listing(entry: &mut Map<String, Value>, scored: &Scored) {
    if let Some(listing) = &scored.registry {
        entry.insert(
            "registry".into(),
            serde_json::to_value(listing).expect("a listing serialises"),
        );
    }
}

/// The request's `registry` block: which register, and how the model and it compare.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub uri: String,
    pub version: String,
    pub records: usize,
    pub radius_m: f64,
    pub positive_label: String,
    /// Successful predictions checked against the register.
    pub checked: usize,
    /// Of those, the ones the register lists.
    pub listed: usize,
    /// Of those, the ones the model says are `positive_label` (its label, or one of its
    /// labels for a multilabel model).
    pub flagged: usize,
    /// Flagged by the model, absent from the register: unreported roofs.
    pub flagged_unlisted: usize,
    /// Listed, but not flagged by the model: removed roofs, or a stale register.
    pub listed_not_flagged: usize,
}

/// The summary for one request's outcomes against `registry`.
pub fn summary(registry: &Registry, outcomes: &[Outcome]) -> Value {
    let mut summary = Summary::new(registry);
    summary.add(outcomes);
    serde_json::to_value(summary).expect("a summary serialises")
}

impl Summary {
    /// Nothing checked yet against `registry`.
    pub fn new(registry: &Registry) -> Self {
        Self {
            uri: registry.info.uri.clone(),
            version: registry.info.version.clone(),
            records: registry.info.records,
            radius_m: registry.settings.radius_m,
            positive_label: registry.settings.positive_label.clone(),
            checked: 0,
            listed: 0,
            flagged: 0,
            flagged_unlisted: 0,
            listed_not_flagged: 0,
        }
    }

    /// Counts `outcomes` in: one request's, or one chunk of a local run's.
    pub fn add(&mut self, outcomes: &[Outcome]) {
        for scored in outcomes.iter().filter_map(|o| o.as_ref().ok()) {
            let Some(listing) = &scored.registry else {
                continue;
            };
            // The model's own decision: the thresholded label, or one of a multilabel answer's.
            let flagged = scored.says(&self.positive_label);
            self.checked += 1;
            self.listed += usize::from(listing.listed);
            self.flagged += usize::from(flagged);
            self.flagged_unlisted += usize::from(flagged && !listing.listed);
            self.listed_not_flagged += usize::from(listing.listed && !flagged);
        }
    }
}
