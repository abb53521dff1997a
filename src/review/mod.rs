//! The review page: one self-contained HTML file with a card per building — the chip the
//! model was given (before normalisation), its id, label, score, register status and error —
//! for a person to check predictions by looking at them.
//!
//! [`Picker`] chooses the cards as a run goes, in bounded memory whatever the run's size: each
//! building falls in one group — an error, flagged but not in the register, listed but not
//! flagged, or else its label — and each group keeps at most `limit` candidates (its
//! highest scores; errors in input order), chips encoded only for the ones kept. At the end
//! the `limit` cards are shared fairly between the groups (a group with fewer candidates than
//! its share leaves the rest to the others), so every filter on the page has cards to show.
//! [`page`] writes the HTML.

pub mod page;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::Arc;

use image::RgbImage;

use crate::error::BuildingError;
use crate::outcome::{Listing, Outcome};
use crate::request::BuildingInput;

/// `--review-limit`'s default: enough to review a city's disagreements, small enough for a
/// browser to open at once (≈ 2–25 KB a card).
pub const DEFAULT_LIMIT: usize = 2000;

/// Which group a building's card competes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    FlaggedUnlisted,
    ListedNotFlagged,
    Errors,
    /// A label's index, for predictions the register (if any) agrees with.
    Label(usize),
}

/// One building's card.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// Position in the input, from 0.
    pub order: usize,
    pub id: String,
    pub label: Option<String>,
    pub score: Option<f32>,
    /// The register's answer, when a register is configured.
    pub listing: Option<Listing>,
    pub error: Option<BuildingError>,
    /// The chip as JPEG; `None` when no chip was made (an error before or during imagery).
    pub jpeg: Option<Vec<u8>>,
    pub group: Group,
}

/// How the model and the register agree, for the filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The label that counts as flagged.
    pub positive_label: String,
}

/// Counts over the whole run, whatever was kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub buildings: usize,
    /// Predictions per label, in label order.
    pub labels: Vec<usize>,
    pub errors: usize,
    pub flagged_unlisted: usize,
    pub listed_not_flagged: usize,
}

/// Chooses the cards of a run as its chunks come.
pub struct Picker {
    limit: usize,
    labels: Vec<String>,
    register: Option<Register>,
    groups: BTreeMap<Group, BinaryHeap<Ranked>>,
    totals: Totals,
}

/// A kept candidate, ordered so that the heap's top is the one to drop first.
struct Ranked {
    rank: f64,
    card: Card,
}

impl Ranked {
    /// Higher rank, then earlier in the input, is better; `Ord` puts the worst on top.
    fn key(&self) -> (f64, std::cmp::Reverse<usize>) {
        (self.rank, std::cmp::Reverse(self.card.order))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        // Reversed: the worst candidate is the heap's greatest.
        b.0.total_cmp(&a.0).then(b.1.cmp(&a.1))
    }
}

impl Picker {
    /// `limit` cards at most (≥ 1); `register` when predictions are checked against one.
    pub fn new(limit: usize, labels: Vec<String>, register: Option<Register>) -> Self {
        Self {
            limit: limit.max(1),
            totals: Totals {
                labels: vec![0; labels.len()],
                ..Totals::default()
            },
            labels,
            register,
            groups: BTreeMap::new(),
        }
    }

    /// Considers one building (`order` is its position in the input). Its chip is encoded
    /// only if it is kept: CPU work, so call this off the async threads.
    pub fn offer(
        &mut self,
        order: usize,
        building: &BuildingInput,
        outcome: &Outcome,
        chip: Option<&Arc<RgbImage>>,
    ) {
        self.totals.buildings += 1;
        let (group, rank) = match outcome {
            Err(_) => {
                self.totals.errors += 1;
                (Group::Errors, -(order as f64))
            }
            Ok(scored) => {
                let label = self.labels.iter().position(|l| *l == scored.label);
                if let Some(l) = label {
                    self.totals.labels[l] += 1;
                }
                let group = match (&self.register, &scored.registry) {
                    (Some(register), Some(listing)) => {
                        // The model's own decision, as the register's summary counts it.
                        let flagged = scored.says(&register.positive_label);
                        if flagged && !listing.listed {
                            self.totals.flagged_unlisted += 1;
                            Some(Group::FlaggedUnlisted)
                        } else if listing.listed && !flagged {
                            self.totals.listed_not_flagged += 1;
                            Some(Group::ListedNotFlagged)
                        } else {
                            None
                        }
                    }
                    _ => None,
                };
                (
                    group.unwrap_or(Group::Label(label.unwrap_or(0))),
                    f64::from(scored.score),
                )
            }
        };
        let heap = self.groups.entry(group).or_default();
        let better = heap.len() < self.limit
            || heap
                .peek()
                .is_some_and(|worst| (rank, std::cmp::Reverse(order)) > worst.key());
        if !better {
            return;
        }
        let card = Card {
            order,
            id: crate::files::id_key(&building.id),
            label: outcome.as_ref().ok().map(|s| s.label.clone()),
            score: outcome.as_ref().ok().map(|s| s.score),
            listing: outcome.as_ref().ok().and_then(|s| s.registry.clone()),
            error: outcome.as_ref().err().cloned(),
            jpeg: chip.map(|c| crate::chip_jpeg::encode(c)),
            group,
        };
        heap.push(Ranked { rank, card });
        if heap.len() > self.limit {
            heap.pop();
        }
    }

    /// The run's counts so far.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// The chosen cards (in input order) and the run's counts.
    pub fn finish(self) -> Selection {
        let sizes: Vec<usize> = self.groups.values().map(BinaryHeap::len).collect();
        let shares = fair_shares(&sizes, self.limit);
        let mut cards: Vec<Card> = self
            .groups
            .into_values()
            .zip(shares)
            .flat_map(|(heap, share)| {
                let mut best = heap.into_sorted_vec();
                // `into_sorted_vec` is ascending by `Ord`, i.e. best first here.
                best.truncate(share);
                best.into_iter().map(|r| r.card)
            })
            .collect();
        cards.sort_by_key(|c| c.order);
        Selection {
            capped: cards.len() < self.totals.buildings,
            cards,
            totals: self.totals,
            limit: self.limit,
            labels: self.labels,
            register: self.register,
        }
    }
}

/// The cards chosen for a page.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub cards: Vec<Card>,
    pub totals: Totals,
    pub limit: usize,
    /// Fewer cards than buildings: the page says how they were chosen.
    pub capped: bool,
    pub labels: Vec<String>,
    pub register: Option<Register>,
}

/// Splits `limit` between groups of `sizes` candidates: equal shares, a group smaller than its
/// share keeping all it has and leaving the rest to the others.
fn fair_shares(sizes: &[usize], limit: usize) -> Vec<usize> {
    let mut shares = vec![0; sizes.len()];
    let mut left = limit;
    let mut open: Vec<usize> = (0..sizes.len()).filter(|&g| sizes[g] > 0).collect();
    while left > 0 && !open.is_empty() {
        let share = (left / open.len()).max(1);
        let mut still_open = Vec::new();
        for &g in &open {
            if left == 0 {
                break;
            }
            let take = share.min(sizes[g] - shares[g]).min(left);
            shares[g] += take;
            left -= take;
            if shares[g] < sizes[g] {
                still_open.push(g);
            }
        }
        open = still_open;
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::outcome::Scored;
    use crate::request::parse_building;
    use serde_json::json;

    fn building(i: usize) -> BuildingInput {
        parse_building(i, &json!({"id": format!("b{i}"), "lat": 1.0, "lon": 1.0}))
    }

    fn scored(label: &str, score: f32, listed: Option<bool>) -> Outcome {
        Ok(Scored {
            label: label.into(),
            score,
            probabilities: vec![],
            labels: None,
            registry: listed.map(|listed| Listing {
                listed,
                record: None,
                distance_m: None,
            }),
        })
    }

    #[test]
    fn shares_are_fair_and_unused_ones_go_to_the_others() {
        assert_eq!(fair_shares(&[100, 100, 100], 90), [30, 30, 30]);
        assert_eq!(fair_shares(&[5, 100, 100], 90), [5, 43, 42]);
        assert_eq!(fair_shares(&[5, 0, 7], 90), [5, 0, 7]);
        assert_eq!(fair_shares(&[3, 3, 3], 2), [1, 1, 0]);
        assert_eq!(fair_shares(&[], 10), Vec::<usize>::new());
    }

    #[test]
    fn each_group_keeps_its_highest_scores_and_errors_their_first() {
        let labels = vec!["other".to_string(), "asbestos".to_string()];
        let register = Register {
            positive_label: "asbestos".into(),
        };
        let mut picker = Picker::new(8, labels, Some(register));
        let chip = Arc::new(RgbImage::new(8, 8));
        for i in 0..40 {
            let score = (i % 10) as f32 / 10.0;
            let outcome = match i % 4 {
                0 => scored("other", score, Some(false)),
                1 => scored("asbestos", score, Some(false)),
                2 => scored("other", score, Some(true)),
                _ => Err(BuildingError::new(ErrorCode::ImageUnavailable, "404")),
            };
            picker.offer(i, &building(i), &outcome, Some(&chip));
        }
        let totals = picker.totals().clone();
        assert_eq!(
            totals,
            Totals {
                buildings: 40,
                labels: vec![20, 10],
                errors: 10,
                flagged_unlisted: 10,
                listed_not_flagged: 10,
            }
        );
        let selection = picker.finish();
        assert!(selection.capped);
        assert_eq!(selection.cards.len(), 8);
        let of = |g: Group| -> Vec<usize> {
            selection
                .cards
                .iter()
                .filter(|c| c.group == g)
                .map(|c| c.order)
                .collect()
        };
        // Scores repeat every 10 buildings: the best two of each group, earliest on ties.
        assert_eq!(of(Group::Label(0)), [8, 28]);
        assert_eq!(of(Group::FlaggedUnlisted), [9, 29]);
        assert_eq!(of(Group::ListedNotFlagged), [18, 38]);
        assert_eq!(of(Group::Errors), [3, 7]);
        let card = &selection.cards[0];
        assert_eq!((card.id.as_str(), card.jpeg.is_some()), ("b3", true));
        assert_eq!(
            card.error.as_ref().unwrap().code,
            ErrorCode::ImageUnavailable
        );
    }

    #[test]
    fn an_uncapped_run_keeps_every_building() {
        let mut picker = Picker::new(100, vec!["a".into()], None);
        for i in 0..30 {
            picker.offer(i, &building(i), &scored("a", 0.5, None), None);
        }
        let selection = picker.finish();
        assert!(!selection.capped);
        assert_eq!(
            selection.cards.iter().map(|c| c.order).collect::<Vec<_>>(),
            (0..30).collect::<Vec<_>>()
        );
    }
}
