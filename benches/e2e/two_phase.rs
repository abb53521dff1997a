//! The old strategy, rebuilt from the library's own pieces as the baseline: a download phase
//! (every unique image fetched, same HTTP client settings and concurrency as the function),
//! then an inference phase (decode on all vCPUs, stitch, run the batches through the model's
//! own chips → tensor path). Same work, same parts; only the phase barrier differs from `Pipeline::run`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use image::RgbImage;
use tilepredict::geo::LatLon;
use tilepredict::imagery::fetch::{FetchSettings, Fetcher};
use tilepredict::imagery::template::TileTemplate;
use tilepredict::imagery::{Imagery, chip, decode};
use tilepredict::model::Model;
use tokio::sync::Semaphore;

use crate::world::ZOOM;

/// How long each phase took.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub download: Duration,
    pub inference: Duration,
}

impl Phases {
    pub fn total(&self) -> Duration {
        self.download + self.inference
    }
}

/// Imagery as `App::init` builds it, without the warm cache.
pub fn imagery(tile_url: &str, chip_size: u32, concurrency: usize) -> Imagery {
    let fetcher = Fetcher::new(FetchSettings {
        timeout: Duration::from_secs(10),
        retries: 2,
        max_bytes: 8 << 20,
        headers: Vec::new(),
        max_connections: concurrency,
    })
    .expect("HTTP client");
    let template = TileTemplate::parse(tile_url).expect("tile template");
    Imagery::new(template, fetcher, ZOOM, chip_size, 0)
}

pub struct TwoPhase {
    pub imagery: Arc<Imagery>,
    pub concurrency: usize,
    pub batch_size: usize,
    /// Decode workers in the inference phase (the vCPUs).
    pub threads: usize,
}

impl TwoPhase {
    pub fn run(&self, rt: &tokio::runtime::Runtime, model: &Model, points: &[LatLon]) -> Phases {
        let plans: Vec<_> = points
            .iter()
            .map(|p| self.imagery.template_parts(*p))
            .collect();
        let mut urls: Vec<String> = plans.iter().flatten().map(|p| p.url.clone()).collect();
        urls.sort();
        urls.dedup();

        let started = Instant::now();
        let bodies = rt.block_on(self.download(&urls));
        let download = started.elapsed();

        let started = Instant::now();
        let images = self.decode_all(&urls, &bodies);
        let (h, w) = (model.input.height as u32, model.input.width as u32);
        let size = self.imagery.chip_size();
        for batch in plans.chunks(self.batch_size) {
            let chips: Vec<RgbImage> = batch
                .iter()
                .map(|parts| {
                    let parts: Vec<(&RgbImage, i64, i64)> = parts
                        .iter()
                        .map(|p| (&images[&p.url], p.dx, p.dy))
                        .collect();
                    chip::fit(chip::stitch(&parts, size), w, h)
                })
                .collect();
            model
                .predict(&chips.iter().collect::<Vec<_>>())
                .expect("ONNX Runtime run");
        }
        Phases {
            download,
            inference: started.elapsed(),
        }
    }

    async fn download(&self, urls: &[String]) -> HashMap<String, Bytes> {
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let cutoff = tokio::time::Instant::now() + Duration::from_secs(300);
        let mut tasks = tokio::task::JoinSet::new();
        for url in urls {
            let (imagery, slots, url) =
                (Arc::clone(&self.imagery), Arc::clone(&slots), url.clone());
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("open semaphore");
                let bytes = imagery.fetch_url(&url, cutoff).await.expect("tile fetched");
                (url, bytes)
            });
        }
        let mut bodies = HashMap::with_capacity(urls.len());
        while let Some(done) = tasks.join_next().await {
            let (url, bytes) = done.expect("download task");
            bodies.insert(url, bytes);
        }
        bodies
    }

    fn decode_all(
        &self,
        urls: &[String],
        bodies: &HashMap<String, Bytes>,
    ) -> HashMap<String, RgbImage> {
        let per_worker = urls.len().div_ceil(self.threads.max(1)).max(1);
        std::thread::scope(|s| {
            let workers: Vec<_> = urls
                .chunks(per_worker)
                .map(|chunk| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .map(|url| {
                                let d = decode::decode(&bodies[url], (256, 256), url)
                                    .expect("tile decodes");
                                (url.clone(), d.image)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("decode worker"))
                .collect()
        })
    }
}
