//! Image bytes → an RGB8 image of the expected size. JPEG, PNG and WebP; grey, RGBA and
//! palette images become RGB. Decoder limits stop decompression bombs before they allocate.

use std::io::Cursor;

use image::{ImageError, ImageFormat, ImageReader, Limits, RgbImage, imageops::FilterType};

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
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(bytes) {
        return Err(invalid(format!(
            "a JPEG cut off before its end ({} bytes)",
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
        .map_err(|e| match e {
            ImageError::Limits(_) => invalid(format!(
                "{} is over the decoder's limits ({MAX_SIDE} px a side, {} MiB)",
                declared_size(bytes),
                MAX_ALLOC >> 20
            )),
            e => invalid(format!("cannot decode: {e}")),
        })?
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

/// Whether a JPEG has its end-of-image marker after its last scan. The decoder fills a cut-off
/// JPEG with grey instead of failing, and a half-grey chip would be classified as if it were
/// real. Inside scan data every 0xFF byte is followed by 0x00 or a restart marker, so `FF DA`
/// (start of scan) and `FF D9` (end of image) found there are real markers; an `FF D9` of an
/// EXIF thumbnail comes before the first scan and does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let Some(last_scan) = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]) else {
        return false;
    };
    bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9])
}

/// The size an image's header declares, read without decoding its pixels (for messages).
fn declared_size(bytes: &[u8]) -> String {
    ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .map_or("the image".into(), |(w, h)| format!("{w}x{h} px"))
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
    fn grey_palette_and_webp_images_become_rgb() {
        let grey = image::GrayImage::from_fn(4, 4, |x, y| image::Luma([(x * 10 + y) as u8]));
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let d = decode(&encode(&grey.clone().into(), format), (4, 4), "t").unwrap();
            let p = d.image.get_pixel(3, 2).0;
            assert!(p[0] == p[1] && p[1] == p[2], "{format:?}: {p:?}");
            if format == ImageFormat::Png {
                assert_eq!(p, [32, 32, 32]);
            }
        }

        let mut palette_png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut palette_png, 2, 2);
            encoder.set_color(png::ColorType::Indexed);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_palette(vec![255, 0, 0, 0, 0, 255]);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0, 1, 1, 0]).unwrap();
        }
        let d = decode(&palette_png, (2, 2), "t").unwrap();
        assert_eq!(d.image.get_pixel(0, 0), &Rgb([255, 0, 0]));
        assert_eq!(d.image.get_pixel(1, 0), &Rgb([0, 0, 255]));

        let rgb = RgbImage::from_fn(8, 8, |x, y| Rgb([x as u8 * 30, y as u8 * 30, 7]));
        let webp = encode(&rgb.clone().into(), ImageFormat::WebP);
        assert_eq!(&webp[8..12], b"WEBP");
        let d = decode(&webp, (8, 8), "t").unwrap();
        assert_eq!(d.image, rgb, "lossless WebP decodes to the same pixels");
    }

    #[test]
    fn a_header_declaring_a_huge_image_is_refused_before_allocating() {
        // A valid 16x16 JPEG whose frame header (SOF0) is patched to declare 65000x65000:
        // decoding it would need 12 GB.
        let mut jpeg = encode(
            &RgbImage::from_pixel(16, 16, Rgb([1, 2, 3])).into(),
            ImageFormat::Jpeg,
        );
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFD, 0xE8, 0xFD, 0xE8]);
        let err = decode(&jpeg, (16, 16), "t").unwrap_err();
        assert_eq!(err.code, ErrorCode::ImageInvalid);
        assert!(
            err.message
                .contains("65000x65000 px is over the decoder's limits"),
            "{}",
            err.message
        );
    }

    #[test]
    fn html_and_truncated_bodies_are_image_invalid() {
        let err = decode(b"<html>oops</html>", (256, 256), "t").unwrap_err();
        assert_eq!(err.code, ErrorCode::ImageInvalid);
        assert!(
            err.message.contains("not a JPEG, PNG or WebP"),
            "{}",
            err.message
        );

        // Textured, so the cut falls inside the scan data, where decoders are lenient.
        let textured = RgbImage::from_fn(128, 128, |x, y| {
            Rgb([(x * 2) as u8, (y * 2) as u8, (x ^ y) as u8])
        });
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let whole = encode(&textured.clone().into(), format);
            assert!(decode(&whole, (128, 128), "t").is_ok(), "{format:?}");
            // (A PNG missing only its end chunk has every pixel, and decodes: that is fine.)
            for cut in [whole.len() / 2, whole.len() * 9 / 10] {
                let code = decode(&whole[..cut], (128, 128), "t")
                    .map(|_| ())
                    .map_err(|e| e.code);
                assert_eq!(
                    code,
                    Err(ErrorCode::ImageInvalid),
                    "{format:?} cut at {cut}"
                );
            }
        }
    }
}
