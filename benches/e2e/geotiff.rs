//! The GeoTIFF case: the same 110- and 1,000-building events read from one Cloud-Optimized
//! GeoTIFF of the town (scripts/make_bench_cog.py: zoom 19's grid, JPEG q85 in 256-px tiles)
//! on the loopback S3 server, which paces every body to S3's per-request rate as it does for
//! the model. Compared with the tile-server case: warm time (cache off) and bytes read, and the
//! bytes read against the compressed bytes of the internal tiles the chips cover.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use tilepredict::geo::{ChipWindow, LatLon};

use crate::function::{BUCKET, Function, Services};
use crate::report::Table;
use crate::world::Case;
use crate::{Main, Measured, WARM_RUNS};

pub const COG_KEY: &str = "imagery/town.tif";

/// The COG's level-0 grid and tile sizes (its `.json` sidecar).
pub struct Layout {
    zoom: u8,
    left: i64,
    top: i64,
    tile: i64,
    across: i64,
    byte_counts: Vec<u64>,
}

impl Layout {
    pub fn read(cog: &Path) -> Self {
        let path = format!("{}.json", cog.display());
        let doc: Value = serde_json::from_slice(
            &std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (make bench makes it)")),
        )
        .expect("layout JSON");
        let n = |k: &str| doc[k].as_i64().expect(k);
        Self {
            zoom: n("zoom") as u8,
            left: n("left"),
            top: n("top"),
            tile: n("tile"),
            across: n("across"),
            byte_counts: doc["byte_counts"]
                .as_array()
                .expect("byte_counts")
                .iter()
                .map(|v| v.as_u64().expect("a count"))
                .collect(),
        }
    }

    /// Compressed bytes of the level-0 tiles the chips (of `chip` px) around `points` cover.
    fn covered_bytes(&self, points: &[LatLon], chip: u32) -> (usize, u64) {
        let mut tiles = BTreeSet::new();
        for p in points {
            let w = ChipWindow::centred_on(*p, self.zoom, chip);
            let (x0, y0) = (w.left - self.left, w.top - self.top);
            let (x1, y1) = (x0 + i64::from(chip) - 1, y0 + i64::from(chip) - 1);
            for row in y0.div_euclid(self.tile)..=y1.div_euclid(self.tile) {
                for col in x0.div_euclid(self.tile)..=x1.div_euclid(self.tile) {
                    tiles.insert((row * self.across + col) as usize);
                }
            }
        }
        let bytes = tiles.iter().map(|&i| self.byte_counts[i]).sum();
        (tiles.len(), bytes)
    }
}

/// Runs both cases from the COG and prints them beside the tile-server figures.
pub fn run(
    services: &Services,
    cases: &[Case],
    main: &Main,
    layout: &Layout,
    chip: u32,
    tile_bytes: f64,
) {
    println!("## GeoTIFF: the same events from a COG on S3\n");
    println!(
        "One COG of the town (zoom 19's grid, JPEG q85, 256-px tiles), on the loopback S3 server paced to 90 MB/s per GET like the \
         model; TILE_URL=s3://{BUCKET}/{COG_KEY}, cache off, 1 cold + {WARM_RUNS} warm runs in a fresh \
         process per case. Tile-server figures from the main table (warm, cache off); its bytes = \
         tiles fetched × their mean size ({:.1} KB). `covered` = the compressed bytes of the COG's \
         internal tiles under the chips.\n",
        tile_bytes / 1024.0
    );
    let mut table = Table::new(&[
        "case",
        "source",
        "warm total_ms",
        "requests",
        "tiles",
        "bytes read",
        "bytes / covered",
        "time vs tile server",
    ]);
    for (case, (xyz, _)) in cases.iter().zip(main) {
        let f = Function::start(
            services,
            &[
                ("TILE_URL", format!("s3://{BUCKET}/{COG_KEY}")),
                ("TILE_CACHE_MB", "0".to_string()),
            ],
            case,
        );
        let m = Measured::take(&f, &[(case, WARM_RUNS)]);
        drop(f);
        let xyz_ms = xyz.warm_stat(|r| r.timing.total_ms).median;
        let xyz_tiles = xyz.warm_stat(|r| r.timing.images_fetched as f64).median;
        table.row(vec![
            case.name.into(),
            "tile server".into(),
            xyz.warm_stat(|r| r.timing.total_ms).show(0),
            format!("{xyz_tiles:.0}"),
            format!("{xyz_tiles:.0}"),
            format!("{:.0} KB", xyz_tiles * tile_bytes / 1024.0),
            "".into(),
            "1.00".into(),
        ]);
        let (covered_tiles, covered) = layout.covered_bytes(&case.points, chip);
        let ranges = |r: &crate::function::Run| r.timing.range_requests.unwrap_or(0) as f64;
        let bytes = |r: &crate::function::Run| r.timing.bytes_fetched.unwrap_or(0) as f64;
        let warm_ms = m.warm_stat(|r| r.timing.total_ms);
        let read = m.warm_stat(bytes).median;
        table.row(vec![
            case.name.into(),
            "COG on S3".into(),
            warm_ms.show(0),
            format!("{:.0}", m.warm_stat(ranges).median),
            format!(
                "{:.0} ({covered_tiles} covered)",
                m.warm_stat(|r| r.timing.images_fetched as f64).median
            ),
            format!("{:.0} KB", read / 1024.0),
            format!("{:.2}", read / covered as f64),
            format!("{:.2}", warm_ms.median / xyz_ms),
        ]);
        println!(
            "({}: tile server warm {xyz_ms:.0} ms; COG cold {:.0} ms in {} ranged GETs (the \
             header was read at init), warm {:.0} ms, {:.0} GETs, {:.0} KB = {:.2} × covered)",
            case.name,
            m.cold.timing.total_ms,
            m.cold.timing.range_requests.unwrap_or(0),
            warm_ms.median,
            m.warm_stat(ranges).median,
            read / 1024.0,
            read / covered as f64,
        );
    }
    table.print();
}
