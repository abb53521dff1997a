//! Calibration chips and model comparison, for `make quantize`.
//!
//! `bootstrap chips EVENT.json OUT.npy` cuts a chip for every building of an event file (any
//! shape `invoke` accepts: direct, GeoJSON, Step Functions items) with the sandbox's own
//! imagery code ([`ChipMaker::cut`](crate::pipeline::assembly::ChipMaker::cut), the path every
//! request takes) and writes them as the model's input tensor, exactly as the model is fed:
//! a quantizer calibrated on them sees what inference sees. `bootstrap compare OTHER.onnx
//! CHIPS.npy` runs `MODEL_URI`'s model and another (the quantized copy) on such a file with the
//! same settings and prints how often they agree.

use std::collections::BTreeMap;
use std::io::BufWriter;
use std::process::ExitCode;
use std::time::Duration;

use image::RgbImage;

use crate::app::{App, load_model};
use crate::blob::BlobUri;
use crate::model::compare::compare as compare_models;
use crate::model::npy;

/// Buildings cut per round: bounds the chips held before they are written.
const ROUND: usize = 512;

/// Writes the chips of `event`'s buildings to `out` (a `.npy` file).
pub async fn chips(app: &App, event: &str, out: &str) -> ExitCode {
    match write_chips(app, event, out).await {
        Ok(summary) => {
            eprintln!("{summary}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bootstrap chips: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn write_chips(app: &App, event: &str, out: &str) -> Result<String, String> {
    let bytes = std::fs::read(event).map_err(|e| format!("cannot read {event}: {e}"))?;
    let request =
        crate::events::parse_body(&bytes, usize::MAX).map_err(|e| format!("{event}: {e}"))?;
    let buildings = request.buildings();
    let positions: Vec<_> = buildings
        .iter()
        .filter_map(|b| b.position.as_ref().ok().copied())
        .collect();
    let model = app.model();
    let size = (model.input.width as u32, model.input.height as u32);
    let mut failed: BTreeMap<&'static str, usize> = BTreeMap::new();
    *failed.entry("invalid position").or_default() += buildings.len() - positions.len();
    let mut chips: Vec<RgbImage> = Vec::new();
    for round in positions.chunks(ROUND) {
        let cutoff = tokio::time::Instant::now() + Duration::from_secs(600);
        for chip in app.chip_maker().cut(round, size, cutoff).await {
            match chip {
                Ok(chip) => chips.push(chip),
                Err(e) => *failed.entry(e.code.as_str()).or_default() += 1,
            }
        }
    }
    failed.retain(|_, n| *n > 0);
    if chips.is_empty() {
        return Err(format!(
            "no chip could be cut ({failed:?}): check TILE_URL and TILE_ZOOM"
        ));
    }
    let file = std::fs::File::create(out).map_err(|e| format!("cannot write {out}: {e}"))?;
    let batch = model.input.fixed_batch.unwrap_or(32);
    let sample = model.input.batch(&[]);
    let mut writer = npy::Writer::new(BufWriter::new(file), &sample, chips.len())
        .map_err(|e| format!("cannot write {out}: {e}"))?;
    for part in chips.chunks(batch) {
        let refs: Vec<&RgbImage> = part.iter().collect();
        writer
            .rows(&model.input.batch(&refs), part.len())
            .map_err(|e| format!("cannot write {out}: {e}"))?;
    }
    writer
        .finish()
        .map_err(|e| format!("cannot write {out}: {e}"))?;
    Ok(format!(
        "wrote {} chips of {} buildings to {out}: {} {:?} rows, as the model is fed ({}){}",
        chips.len(),
        buildings.len(),
        app.model_info.input.element_type,
        sample.row_shape(),
        app.model_info.input.layout,
        if failed.is_empty() {
            String::new()
        } else {
            format!("; without a chip: {failed:?}")
        }
    ))
}

/// Compares `MODEL_URI`'s model with `other` on the chips in `chips`.
pub async fn compare(other: &str, chips: &str) -> ExitCode {
    match run_compare(other, chips).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("bootstrap compare: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_compare(other: &str, chips: &str) -> Result<String, String> {
    let config = super::model_config().map_err(|e| e.to_string())?;
    let other_uri = BlobUri::parse("OTHER", other).map_err(|e| e.to_string())?;
    let reference = load_model(&config, &config.model_uri)
        .await
        .map_err(|e| format!("{}: {e}", e.error_type()))?;
    let second = load_model(&config, &other_uri)
        .await
        .map_err(|e| format!("{}: {e}", e.error_type()))?;
    let bytes = std::fs::read(chips).map_err(|e| format!("cannot read {chips}: {e}"))?;
    let tensor = npy::read(&bytes).map_err(|e| format!("{chips}: {e}"))?;
    let (a, b) = (&reference.model, &second.model);
    let found = compare_models(a, b, &tensor, config.batch_size)?;
    let rate = |t: Duration| found.chips as f64 / t.as_secs_f64().max(1e-9);
    let (chip, label, pa, pb) = found.largest_at;
    // With two labels, also the hardest threshold: the reference's median, half the chips on
    // each side. A model whose chips sit far from its own threshold agrees there trivially.
    let median = (a.labels.len() == 2).then(|| {
        let (share, at) = found.agreement_at_median(1);
        let (low, high) = found.spread(1);
        format!(
            "\n  same side of the median p({}) = {at:.4}: {share:.2} % (the reference's p({}) spans \
             {low:.4}–{high:.4})",
            a.labels[1], a.labels[1]
        )
    });
    Ok(format!(
        "compared on {} chips ({chips})\n  reference  {} ({} bytes)\n  other      {other} ({} \
         bytes)\n  same answer          {} of {} ({:.2} %)\n  largest |Δp|         {:.4} \
         (chip {chip}, {}: {pa:.4} → {pb:.4})\n  ONNX Runtime time    reference {:.2} s ({:.1} \
         chips/s), other {:.2} s ({:.1} chips/s): other ×{:.2} (batches of {}, {} threads, \
         this machine)",
        found.chips,
        config.model_uri,
        reference.bytes,
        second.bytes,
        found.same,
        found.chips,
        found.agreement_percent(),
        found.largest,
        a.labels[label],
        found.reference_time.as_secs_f64(),
        rate(found.reference_time),
        found.other_time.as_secs_f64(),
        rate(found.other_time),
        rate(found.other_time) / rate(found.reference_time),
        a.input.fixed_batch.unwrap_or(config.batch_size),
        config.inference_threads,
    ) + &median.unwrap_or_default())
}
