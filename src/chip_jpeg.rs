//! Chips as JPEG, for people to look at: the review page (`bootstrap predict --review`) and
//! `"include_chips": true` answers both embed the chip the model was given, before
//! normalisation, in this one encoding.
//!
//! Every chip's JPEG is at most [`max_bytes`] for its size, by construction: it is encoded at
//! quality 85, and again at lower qualities until it fits. A bound known before any work is
//! what lets the handler refuse a request whose chips could not fit Lambda's 6 MB response
//! before fetching a single image. Typical aerial chips fit at quality 85 (≈ 0.1–0.3 bytes a
//! pixel); only noise-like chips go lower, and even pure noise fits by quality 25.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, RgbImage};

/// The qualities tried in turn; the last one makes even random noise small (≈ 0.2 bytes a
/// pixel), so the bound holds for any chip.
const QUALITIES: [u8; 7] = [85, 70, 55, 40, 25, 10, 1];

/// Headers and tables a JPEG carries whatever its size.
const FIXED_BYTES: usize = 1024;

/// The most bytes a `width`×`height` chip's JPEG takes: 1 KiB plus half a byte a pixel.
pub fn max_bytes(width: u32, height: u32) -> usize {
    FIXED_BYTES + (width as usize * height as usize) / 2
}

/// The longest base64 text of such a chip (what an answer carries).
pub fn max_base64_len(width: u32, height: u32) -> usize {
    max_bytes(width, height).div_ceil(3) * 4
}

/// The chip as a baseline JPEG of at most [`max_bytes`]. CPU work (≈ 0.1–1 ms a chip): run it
/// on a blocking thread.
pub fn encode(chip: &RgbImage) -> Vec<u8> {
    let budget = max_bytes(chip.width(), chip.height());
    let mut smallest = Vec::new();
    for quality in QUALITIES {
        smallest = at_quality(chip, quality);
        if smallest.len() <= budget {
            break;
        }
    }
    smallest
}

fn at_quality(chip: &RgbImage, quality: u8) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FIXED_BYTES + chip.as_raw().len() / 8);
    JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            chip.as_raw(),
            chip.width(),
            chip.height(),
            ExtendedColorType::Rgb8,
        )
        .expect("encoding RGB8 into memory cannot fail");
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn noise(side: u32, seed: u64) -> RgbImage {
        let mut rng = fastrand::Rng::with_seed(seed);
        RgbImage::from_fn(side, side, |_, _| Rgb([rng.u8(..), rng.u8(..), rng.u8(..)]))
    }

    #[test]
    fn even_random_noise_fits_the_bound_at_every_size() {
        for side in [8, 16, 32, 64, 100, 128, 224, 384] {
            let chip = noise(side, u64::from(side));
            let jpeg = encode(&chip);
            assert!(
                jpeg.len() <= max_bytes(side, side),
                "{side}px: {} > {}",
                jpeg.len(),
                max_bytes(side, side)
            );
            let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            assert_eq!(back.dimensions(), (side, side));
        }
    }

    #[test]
    fn a_smooth_chip_keeps_quality_85_and_its_colours() {
        let chip = RgbImage::from_fn(64, 64, |x, y| Rgb([150, 100 + (x / 8) as u8, y as u8]));
        let jpeg = encode(&chip);
        assert_eq!(jpeg, at_quality(&chip, 85));
        let back = image::load_from_memory(&jpeg).unwrap().to_rgb8();
        let (a, b) = (chip.get_pixel(20, 30), back.get_pixel(20, 30));
        for c in 0..3 {
            assert!(a[c].abs_diff(b[c]) <= 6, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn base64_length_covers_the_byte_bound() {
        assert_eq!(max_bytes(64, 64), 1024 + 2048);
        assert_eq!(max_base64_len(64, 64), 4096);
        assert_eq!(max_base64_len(1, 1), 1368);
    }
}
