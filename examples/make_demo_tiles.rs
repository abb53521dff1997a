//! Paints the demo imagery behind `make run`: XYZ tiles at zoom 19 covering the buildings of
//! `events/direct.json`, with a square roof under each building — grey asbestos-cement-like
//! roofs for even positions, red tiled ones for odd positions — on a grass background.
//!
//!     cargo run --example make_demo_tiles -- events/direct.json fixtures/demo-tiles
//!
//! The output is committed (a few KB of flat-colour PNGs); rerun this after editing the event.

use std::collections::BTreeSet;
use std::path::Path;

use image::{Rgb, RgbImage};
use tilepredict::geo::{ChipWindow, LatLon, TILE_SIZE, to_pixel};

const ZOOM: u8 = 19;
/// Roof half-width in pixels (≈ 7 m at this latitude and zoom).
const ROOF_HALF: f64 = 20.0;
/// The demo model's input: tiles must cover a 64-px chip around every building.
const CHIP: u32 = 64;
const GRASS: Rgb<u8> = Rgb([92, 128, 70]);
const GREY_ROOF: Rgb<u8> = Rgb([150, 152, 150]);
const RED_ROOF: Rgb<u8> = Rgb([176, 72, 46]);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (event, out) = match args.as_slice() {
        [event, out] => (event.clone(), out.clone()),
        _ => ("events/direct.json".into(), "fixtures/demo-tiles".into()),
    };
    let event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&event).expect("read event")).expect("event JSON");
    let roofs: Vec<((f64, f64), Rgb<u8>)> = event["buildings"]
        .as_array()
        .expect("a buildings array")
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let p = LatLon::new(b["lat"].as_f64()?, b["lon"].as_f64()?).ok()?;
            Some((
                to_pixel(p, ZOOM),
                if i % 2 == 0 { GREY_ROOF } else { RED_ROOF },
            ))
        })
        .collect();
    let tiles: BTreeSet<(u32, u32)> = roofs
        .iter()
        .flat_map(|((x, y), _)| {
            let p = tilepredict::geo::from_pixel(*x, *y, ZOOM);
            ChipWindow::centred_on(p, ZOOM, CHIP)
                .tiles()
                .into_iter()
                .map(|t| (t.tile.x, t.tile.y))
        })
        .collect();
    for (tx, ty) in tiles {
        let tile = RgbImage::from_fn(TILE_SIZE, TILE_SIZE, |i, j| {
            let (gx, gy) = (
                f64::from(tx * TILE_SIZE + i) + 0.5,
                f64::from(ty * TILE_SIZE + j) + 0.5,
            );
            roofs
                .iter()
                .find(|((x, y), _)| (gx - x).abs() <= ROOF_HALF && (gy - y).abs() <= ROOF_HALF)
                .map_or(GRASS, |(_, colour)| *colour)
        });
        let path = Path::new(&out).join(format!("{ZOOM}/{tx}/{ty}.png"));
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create tile folder");
        tile.save(&path).expect("write tile");
        println!("wrote {}", path.display());
    }
}
