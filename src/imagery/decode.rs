//! Image bytes → an RGB8 image of the expected size. JPEG, PNG and WebP; grey, RGBA and
//! palette images become RGB. Decoder limits stop decompression bombs before they allocate.

use std::io::Cursor;

use image::{ImageReader, Limits, RgbImage, imageops::FilterType};

use crate::error::{BuildingError, ErrorCode};

/// Largest side we decode; a tile or chip is never near this.
pub const MAX_SIDE: u32 = 8192;
/// Largest decoder allocation (bytes).
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;

/// What a decode produced: the image, and whether it had to be resized to the expected size.
#[derive(Debug)]
pub struct Decoded {
    pub image: RgbImage,
    pub resized_from: Option<(u32, u32)>,
}

pub fn decode(bytes: &[u8], expected: (u32, u32), source: &str) -> Result<Decoded, BuildingError> {
    let invalid =
        |why: String| BuildingError::new(ErrorCode::ImageInvalid, format!("{source}: {why}"));
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid(format!("unreadable: {e}")))?;
    if reader.format().is_none() {
        return Err(invalid(format!(
            "not a JPEG, PNG or WebP image ({} bytes)",
            bytes.len()
        )));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| invalid(format!("cannot decode: {e}")))?
        .into_rgb8();
    if image.dimensions() == expected {
        return Ok(Decoded {
            image,
            resized_from: None,
        });
    }
    let from = image.dimensions();
    let image = image::imageops::resize(&image, expected.0, expected.1, FilterType::Triangle);
    Ok(Decoded {
        image,
        resized_from: Some(from),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgb, Rgba, RgbaImage};

    fn encode(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    #[test]
    fn rgba_png_becomes_rgb() {
        let img = RgbaImage::from_pixel(4, 4, Rgba([10, 20, 30, 128]));
        let png = encode(&img.into(), ImageFormat::Png);
        let d = decode(&png, (4, 4), "t").unwrap();
        assert_eq!(d.image.get_pixel(0, 0), &Rgb([10, 20, 30]));
        assert!(d.resized_from.is_none());
    }

    #[test]
    fn wrong_size_is_resized_and_reported() {
        let img = RgbImage::from_pixel(1, 1, Rgb([200, 0, 0]));
        let png = encode(&img.into(), ImageFormat::Png);
        let d = decode(&png, (8, 8), "t").unwrap();
        assert_eq!(d.image.dimensions(), (8, 8));
        assert_eq!(d.resized_from, Some((1, 1)));
        assert_eq!(d.image.get_pixel(7, 7), &Rgb([200, 0, 0]));
    }

    #[test]
    fn html_and_truncated_bodies_are_image_invalid() {
        let err = decode(b"<html>oops</html>", (256, 256), "t").unwrap_err();
        assert_eq!(err.code, ErrorCode::ImageInvalid);
        let jpeg = encode(
            &RgbImage::from_pixel(64, 64, Rgb([1, 2, 3])).into(),
            ImageFormat::Jpeg,
        );
        let err = decode(&jpeg[..jpeg.len() / 2], (64, 64), "t").unwrap_err();
        assert_eq!(err.code, ErrorCode::ImageInvalid);
    }
}
