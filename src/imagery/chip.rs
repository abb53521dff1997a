//! Stitching: paste the decoded images a chip needs at their offsets, then resize to the
//! model's input. Pure pixel work on RGB8, run on blocking threads by the pipeline.

use image::{RgbImage, imageops::FilterType};

/// Builds the `size`×`size` chip from `(image, dx, dy)` parts: each image's top-left pixel
/// lands at chip coordinate (dx, dy); pixels no part covers stay black.
pub fn stitch(parts: &[(&RgbImage, i64, i64)], size: u32) -> RgbImage {
    let mut chip = RgbImage::new(size, size);
    let side = i64::from(size);
    for &(image, dx, dy) in parts {
        let (w, h) = (i64::from(image.width()), i64::from(image.height()));
        let x0 = dx.max(0);
        let x1 = (dx + w).min(side);
        if x0 >= x1 {
            continue;
        }
        let row_bytes = (x1 - x0) as usize * 3;
        for y in dy.max(0)..(dy + h).min(side) {
            let src_start = (((y - dy) * w + (x0 - dx)) * 3) as usize;
            let dst_start = ((y * side + x0) * 3) as usize;
            chip.as_mut()[dst_start..dst_start + row_bytes]
                .copy_from_slice(&image.as_raw()[src_start..src_start + row_bytes]);
        }
    }
    chip
}

/// Resizes to the model's input size when it differs (Triangle: smooth, cheap, no ringing).
pub fn fit(chip: RgbImage, width: u32, height: u32) -> RgbImage {
    if chip.dimensions() == (width, height) {
        chip
    } else {
        image::imageops::resize(&chip, width, height, FilterType::Triangle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn gradient(w: u32, h: u32, tag: u8) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, tag]))
    }

    #[test]
    fn four_tiles_stitch_into_one_chip_pixel_for_pixel() {
        let (a, b, c, d) = (
            gradient(256, 256, 1),
            gradient(256, 256, 2),
            gradient(256, 256, 3),
            gradient(256, 256, 4),
        );
        let chip = stitch(
            &[(&a, -240, -250), (&b, 16, -250), (&c, -240, 6), (&d, 16, 6)],
            32,
        );
        assert_eq!(chip.get_pixel(0, 0), &Rgb([240, 250, 1]));
        assert_eq!(chip.get_pixel(15, 5), &Rgb([255, 255, 1]));
        assert_eq!(chip.get_pixel(16, 0), &Rgb([0, 250, 2]));
        assert_eq!(chip.get_pixel(0, 6), &Rgb([240, 0, 3]));
        assert_eq!(chip.get_pixel(31, 31), &Rgb([15, 25, 4]));
    }

    #[test]
    fn uncovered_pixels_stay_black_and_far_parts_are_ignored() {
        let a = gradient(8, 8, 9);
        let chip = stitch(&[(&a, 4, 4), (&a, 100, 0), (&a, 0, -50)], 16);
        assert_eq!(chip.get_pixel(0, 0), &Rgb([0, 0, 0]));
        assert_eq!(chip.get_pixel(4, 4), &Rgb([0, 0, 9]));
        assert_eq!(chip.get_pixel(11, 11), &Rgb([7, 7, 9]));
        assert_eq!(chip.get_pixel(12, 12), &Rgb([0, 0, 0]));
    }

    #[test]
    fn fit_resizes_only_when_needed() {
        let chip = RgbImage::from_pixel(64, 64, Rgb([9, 8, 7]));
        assert_eq!(fit(chip.clone(), 64, 64), chip);
        let small = fit(chip, 32, 16);
        assert_eq!(small.dimensions(), (32, 16));
        assert_eq!(small.get_pixel(5, 5), &Rgb([9, 8, 7]));
    }
}
