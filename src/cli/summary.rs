//! What a local run says when it ends: buildings and time, counts per label, failures per
//! error code, throughput, the register summary, where things were written, peak memory.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::outcome::Outcome;
use crate::registry::answer::Summary as RegisterSummary;
use crate::review::page::thousands;

/// This run's counts (buildings a resumed run found already done are not in them).
pub struct Summary {
    labels: Vec<String>,
    per_label: Vec<usize>,
    errors: BTreeMap<&'static str, usize>,
    buildings: usize,
    register: Option<RegisterSummary>,
}

impl Summary {
    pub fn new(labels: Vec<String>, register: Option<RegisterSummary>) -> Self {
        Self {
            per_label: vec![0; labels.len()],
            labels,
            errors: BTreeMap::new(),
            buildings: 0,
            register,
        }
    }

    /// Counts one chunk in.
    pub fn add(&mut self, outcomes: &[Outcome]) {
        self.buildings += outcomes.len();
        for outcome in outcomes {
            match outcome {
                Ok(scored) => {
                    if let Some(i) = self.labels.iter().position(|l| *l == scored.label) {
                        self.per_label[i] += 1;
                    }
                }
                Err(error) => *self.errors.entry(error.code.as_str()).or_default() += 1,
            }
        }
        if let Some(register) = &mut self.register {
            register.add(outcomes);
        }
    }

    /// The summary's lines: `elapsed` is this run's prediction time.
    pub fn lines(&self, elapsed: Duration) -> Vec<String> {
        let seconds = elapsed.as_secs_f64();
        // Tenths of a second, or hundredths for a run shorter than one.
        let digits = if seconds < 1.0 { 2 } else { 1 };
        let mut lines = vec![format!(
            "{} buildings in {seconds:.digits$} s ({:.0} a second)",
            thousands(self.buildings),
            self.buildings as f64 / seconds.max(1e-3)
        )];
        let labels: Vec<String> = self
            .labels
            .iter()
            .zip(&self.per_label)
            .map(|(l, n)| format!("{l} {}", thousands(*n)))
            .collect();
        lines.push(format!("  labels: {}", labels.join(" · ")));
        let failed: usize = self.errors.values().sum();
        if failed == 0 {
            lines.push("  failed: none".into());
        } else {
            let codes: Vec<String> = self
                .errors
                .iter()
                .map(|(c, n)| format!("{c} {}", thousands(*n)))
                .collect();
            lines.push(format!(
                "  failed: {} ({})",
                thousands(failed),
                codes.join(" · ")
            ));
        }
        if let Some(r) = &self.register {
            lines.push(format!(
                "  register {} ({} records, within {} m): {} checked, {} listed, {} {}",
                r.uri,
                thousands(r.records),
                r.radius_m,
                thousands(r.checked),
                thousands(r.listed),
                thousands(r.flagged),
                r.positive_label,
            ));
            lines.push(format!(
                "    {} but not in the register: {} · in the register but not {}: {}",
                r.positive_label,
                thousands(r.flagged_unlisted),
                r.positive_label,
                thousands(r.listed_not_flagged),
            ));
        }
        lines
    }
}

/// The process's peak resident memory, from Linux's `/proc/self/status` (`VmHWM`).
pub fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BuildingError, ErrorCode};
    use crate::outcome::Scored;

    #[test]
    fn counts_per_label_and_per_code() {
        let mut summary = Summary::new(vec!["other".into(), "asbestos".into()], None);
        let ok = |label: &str| {
            Ok(Scored {
                label: label.into(),
                score: 0.9,
                probabilities: vec![0.1, 0.9],
                labels: None,
                registry: None,
            })
        };
        let err = |code| Err(BuildingError::new(code, "x"));
        summary.add(&[ok("asbestos"), ok("other"), ok("asbestos")]);
        summary.add(&[
            err(ErrorCode::ImageUnavailable),
            err(ErrorCode::InvalidCoordinates),
            err(ErrorCode::ImageUnavailable),
        ]);
        let lines = summary.lines(Duration::from_secs(2));
        assert_eq!(lines[0], "6 buildings in 2.0 s (3 a second)");
        let short = summary.lines(Duration::from_millis(50));
        assert_eq!(short[0], "6 buildings in 0.05 s (120 a second)");
        assert_eq!(lines[1], "  labels: other 1 · asbestos 2");
        assert_eq!(
            lines[2],
            "  failed: 3 (image_unavailable 2 · invalid_coordinates 1)"
        );
        assert!(peak_memory_mb().is_some_and(|mb| mb > 1.0));
    }
}
