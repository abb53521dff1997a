//! The int8 bench model: its calibration chips, and how it compares with float32.
//!
//! `-- --calibration OUT.npy` writes the input tensors of a calibration set of buildings
//! (`world::calibration`, its own seed, apart from the measured cases) cut from the bench's
//! world by the function's own chip assembly (`ChipMaker::cut`) and written by the model's own
//! input code: `make bench` quantizes the bench model on them (scripts/quantize.py). The bench
//! then compares the two models on the chips of its measured cases.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;
use tilepredict::geo::LatLon;
use tilepredict::imagery::Imagery;
use tilepredict::model::Model;
use tilepredict::model::input::InputBatch;
use tilepredict::model::npy;
use tilepredict::pipeline::assembly::ChipMaker;
use tokio::sync::Semaphore;

use crate::floor::Ort;
use crate::two_phase;
use crate::world::{self, Latency, tile_server};

/// Writes the calibration chips for `ort`'s model to `out`.
pub fn write_calibration(ort: &Ort, out: &Path) {
    let model = ort.model(2);
    let latency = Latency::new(Duration::ZERO, Duration::ZERO);
    let tiles = tile_server(Arc::new(world::tile_variants()), latency);
    let tile_url = format!("{}/{{z}}/{{x}}/{{y}}.jpg", tiles.base_url());
    let imagery = Arc::new(two_phase::imagery(&tile_url, model.input.width as u32, 100));
    let case = world::calibration();
    let chips = cut(&imagery, &model, &case.points);
    let file = std::io::BufWriter::new(std::fs::File::create(out).expect("calibration file"));
    let sample = model.input.batch(&[]);
    let mut writer = npy::Writer::new(file, &sample, chips.len()).expect("npy header");
    for part in chips.chunks(32) {
        let refs: Vec<&RgbImage> = part.iter().collect();
        writer
            .rows(&model.input.batch(&refs), part.len())
            .expect("npy rows");
    }
    writer.finish().expect("npy file");
    println!(
        "wrote {} calibration chips ({}) to {}",
        chips.len(),
        case.name,
        out.display()
    );
}

/// Every chip for `points` from `imagery`, at the model's input size, as the pipeline cuts them.
pub fn cut(imagery: &Arc<Imagery>, model: &Model, points: &[LatLon]) -> Vec<RgbImage> {
    let maker = ChipMaker {
        imagery: Arc::clone(imagery),
        download_slots: Arc::new(Semaphore::new(100)),
        decode_slots: Arc::new(Semaphore::new(2)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let size = (model.input.width as u32, model.input.height as u32);
    let cutoff = tokio::time::Instant::now() + Duration::from_secs(600);
    rt.block_on(maker.cut(points, size, cutoff))
        .into_iter()
        .map(|chip| chip.expect("the bench world has every tile"))
        .collect()
}

/// The chips as one input batch for `model`.
pub fn batch(model: &Model, chips: &[RgbImage]) -> InputBatch {
    model.input.batch(&chips.iter().collect::<Vec<_>>())
}
