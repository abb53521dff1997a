//! One internal tile's bytes → RGB pixels and which of them hold data. Decompression is ours,
//! not async-tiff's: every decoder here stops at the tile's declared size (tile side × tile side
//! × bands), so a tile that claims to be 256×256 cannot inflate into gigabytes, and a damaged
//! one is an error, not a panic.
//!
//! Data holds where the file says so: its alpha band (> 0), its internal mask (1 bit a pixel),
//! and its `GDAL_NODATA` value (every chosen band equal to it means no data).

use std::io::{Cursor, Read};
use std::ops::Range;

use async_tiff::tags::{Compression, PhotometricInterpretation, Predictor};
use image::{GrayImage, RgbImage};

use super::header::{Header, Level};
use crate::error::{BuildingError, ErrorCode};
use crate::imagery::Image;
use crate::imagery::plan::TileBytes;

/// Decodes tile bytes `data` (and its mask tile's bytes `mask`) of `level`.
pub fn tile(
    header: &Header,
    level: &Level,
    data: &[u8],
    mask: Option<&[u8]>,
) -> Result<Image, String> {
    let ifd = &level.ifd;
    let (w, h) = (level.tile_width, level.tile_height);
    let samples = usize::from(ifd.samples_per_pixel());
    let pixels = w as usize * h as usize;
    let mut raw = decompress(
        ifd.compression(),
        data,
        pixels * samples,
        (w, h),
        ifd.photometric_interpretation(),
        ifd.jpeg_tables(),
    )?;
    if ifd.predictor() == Some(Predictor::Horizontal) {
        undo_horizontal_predictor(&mut raw, w as usize, samples);
    }
    let bands = header.bands;
    let mut rgb = RgbImage::new(w, h);
    for (i, px) in rgb.as_mut().chunks_exact_mut(3).enumerate() {
        let s = &raw[i * samples..(i + 1) * samples];
        px.copy_from_slice(&[s[bands.rgb[0]], s[bands.rgb[1]], s[bands.rgb[2]]]);
    }
    let mut valid: Option<GrayImage> = None;
    let mut invalidate = |i: usize| {
        valid
            .get_or_insert_with(|| GrayImage::from_pixel(w, h, image::Luma([255])))
            .as_mut()[i] = 0;
    };
    if let Some(alpha) = bands.alpha {
        for i in 0..pixels {
            if raw[i * samples + alpha] == 0 {
                invalidate(i);
            }
        }
    }
    if let Some(nodata) = header.nodata {
        for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            if px.iter().all(|v| *v == nodata) {
                invalidate(i);
            }
        }
    }
    if let (Some(bytes), Some(mask_ifd)) = (mask, &level.mask) {
        let stride = (w as usize).div_ceil(8);
        let bits = decompress(
            mask_ifd.compression(),
            bytes,
            stride * h as usize,
            (w, h),
            PhotometricInterpretation::TransparencyMask,
            None,
        )?;
        for y in 0..h as usize {
            for x in 0..w as usize {
                if bits[y * stride + x / 8] & (0x80 >> (x % 8)) == 0 {
                    invalidate(y * w as usize + x);
                }
            }
        }
    }
    Ok(Image { rgb, valid })
}

/// Decodes every tile of a fetched unit. CPU work: call it from a blocking thread.
pub fn unit(
    header: &Header,
    ranges: &[Range<u64>],
    bytes: &[bytes::Bytes],
    tiles: &[TileBytes],
) -> Vec<Result<Image, BuildingError>> {
    let slice = |r: &Range<u64>| -> Option<&[u8]> {
        ranges.iter().zip(bytes).find_map(|(have, b)| {
            (have.start <= r.start && r.end <= have.end)
                .then(|| &b[(r.start - have.start) as usize..(r.end - have.start) as usize])
        })
    };
    tiles
        .iter()
        .map(|t| {
            let level = &header.levels[t.level];
            if t.data.end <= t.data.start {
                // A sparse tile: GDAL writes none for areas without data.
                return Ok(Image::empty(level.tile_width, level.tile_height));
            }
            let data = slice(&t.data);
            let mask = t.mask.as_ref().and_then(slice);
            let data = data.ok_or_else(|| {
                BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!("{}: a tile's bytes were not read (a bug)", header.location),
                )
            })?;
            tile(header, level, data, mask).map_err(|why| {
                BuildingError::new(
                    ErrorCode::ImageInvalid,
                    format!(
                        "{}: level {} tile at bytes {}-{}: {why}",
                        header.location,
                        t.level,
                        t.data.start,
                        t.data.end - 1
                    ),
                )
            })
        })
        .collect()
}

/// Exactly `expected` bytes of decompressed tile data, or why not. Never allocates more than
/// `expected` (plus a decoder's own bounded state).
fn decompress(
    compression: Compression,
    data: &[u8],
    expected: usize,
    (w, h): (u32, u32),
    photometric: PhotometricInterpretation,
    jpeg_tables: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut out = match compression {
        Compression::None => data.get(..expected).map(<[u8]>::to_vec).unwrap_or_default(),
        Compression::Deflate | Compression::OldDeflate => {
            read_capped(flate2::read::ZlibDecoder::new(data), expected, "Deflate")?
        }
        Compression::ZSTD => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(data).map_err(|e| format!("ZSTD: {e}"))?;
            read_capped(decoder, expected, "ZSTD")?
        }
        Compression::LZW => lzw(data, expected)?,
        Compression::ModernJPEG => jpeg(data, jpeg_tables, (w, h), photometric, expected)?,
        Compression::WebP => webp(data, (w, h), expected)?,
        other => return Err(format!("compression {other:?} is not supported")),
    };
    if out.len() < expected {
        return Err(format!(
            "a tile decompressed to {} bytes, {expected} expected (truncated or damaged)",
            out.len()
        ));
    }
    out.truncate(expected);
    Ok(out)
}

/// Reads at most `expected` bytes; more means the stream lies about its size.
fn read_capped(reader: impl Read, expected: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(expected);
    reader
        .take(expected as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what}: {e}"))?;
    if out.len() > expected {
        return Err(format!(
            "a {what} tile inflates past its declared {expected} bytes (a decompression bomb?)"
        ));
    }
    Ok(out)
}

fn lzw(data: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut decoder = weezl::decode::Decoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
    let mut out = vec![0; expected];
    let (mut read, mut written) = (0, 0);
    while written < expected {
        let result = decoder.decode_bytes(&data[read..], &mut out[written..]);
        read += result.consumed_in;
        written += result.consumed_out;
        match result.status {
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::Done | weezl::LzwStatus::NoProgress) => break,
            Err(e) => return Err(format!("LZW: {e}")),
        }
    }
    out.truncate(written);
    Ok(out)
}

/// JPEG-in-TIFF: the file's shared tables (JPEGTables) come first, then the tile's own stream.
fn jpeg(
    data: &[u8],
    tables: Option<&[u8]>,
    (w, h): (u32, u32),
    photometric: PhotometricInterpretation,
    expected: usize,
) -> Result<Vec<u8>, String> {
    let joined: Vec<u8>;
    let stream: &[u8] = match tables {
        Some(t) if t.len() >= 4 && data.len() >= 2 => {
            joined = [&t[..t.len() - 2], &data[2..]].concat();
            &joined
        }
        _ => data,
    };
    if photometric == PhotometricInterpretation::YCbCr
        && let Some(rgb) = jpeg_ycbcr(stream, (w, h), expected)
    {
        return rgb;
    }
    let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(stream));
    decoder.set_max_decoding_buffer_size(expected);
    decoder.set_color_transform(match photometric {
        PhotometricInterpretation::YCbCr => jpeg_decoder::ColorTransform::YCbCr,
        PhotometricInterpretation::RGB => jpeg_decoder::ColorTransform::RGB,
        _ => jpeg_decoder::ColorTransform::None,
    });
    decoder.read_info().map_err(|e| format!("JPEG: {e}"))?;
    let info = decoder.info().ok_or("JPEG: no frame header")?;
    if u32::from(info.width) > w || u32::from(info.height) > h {
        return Err(format!(
            "a JPEG tile of {}x{} px in {w}x{h} tiles",
            info.width, info.height
        ));
    }
    decoder.decode().map_err(|e| format!("JPEG: {e}"))
}

/// A YCbCr JPEG tile (what GDAL writes for RGB JPEG COGs) through the `image` crate's JPEG
/// decoder, the one tile services' JPEGs go through, which is faster than `jpeg-decoder` (see
/// docs/PERFORMANCE.md, "GeoTIFF imagery"). Allocates at most `expected` bytes. `None` when
/// the stream is not three-channel (then `jpeg-decoder`, which handles every layout, takes it).
fn jpeg_ycbcr(
    stream: &[u8],
    (w, h): (u32, u32),
    expected: usize,
) -> Option<Result<Vec<u8>, String>> {
    use image::ImageDecoder;
    let mut decoder = match image::codecs::jpeg::JpegDecoder::new(Cursor::new(stream)) {
        Ok(decoder) => decoder,
        Err(e) => return Some(Err(format!("JPEG: {e}"))),
    };
    if decoder.color_type() != image::ColorType::Rgb8 {
        return None;
    }
    let (dw, dh) = decoder.dimensions();
    if dw > w || dh > h {
        return Some(Err(format!("a JPEG tile of {dw}x{dh} px in {w}x{h} tiles")));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(expected as u64);
    if let Err(e) = decoder.set_limits(limits) {
        return Some(Err(format!("JPEG: {e}")));
    }
    let total = decoder.total_bytes();
    if total > expected as u64 {
        return Some(Err(format!(
            "a JPEG tile of {total} bytes where {expected} fit"
        )));
    }
    let mut rgb = vec![0; total as usize];
    Some(
        decoder
            .read_image(&mut rgb)
            .map(|()| rgb)
            .map_err(|e| format!("JPEG: {e}")),
    )
}

fn webp(data: &[u8], (w, h): (u32, u32), expected: usize) -> Result<Vec<u8>, String> {
    let mut decoder =
        image_webp::WebPDecoder::new(Cursor::new(data)).map_err(|e| format!("WebP: {e}"))?;
    let (dw, dh) = decoder.dimensions();
    if dw != w || dh != h {
        return Err(format!("a WebP tile of {dw}x{dh} px in {w}x{h} tiles"));
    }
    let channels = if decoder.has_alpha() { 4 } else { 3 };
    let mut pixels = vec![0; w as usize * h as usize * channels];
    decoder
        .read_image(&mut pixels)
        .map_err(|e| format!("WebP: {e}"))?;
    let samples = expected / (w as usize * h as usize);
    if samples == channels {
        return Ok(pixels);
    }
    // Lossy WebP drops an all-opaque alpha; a file with alpha expects it back.
    Ok(pixels
        .chunks_exact(channels)
        .flat_map(|px| (0..samples).map(move |i| px.get(i).copied().unwrap_or(255)))
        .collect())
}

/// TIFF predictor 2 on 8-bit samples: each sample is stored as the difference from the same
/// band's sample to its left.
fn undo_horizontal_predictor(raw: &mut [u8], width: usize, samples: usize) {
    for row in raw.chunks_exact_mut(width * samples) {
        for i in samples..row.len() {
            row[i] = row[i].wrapping_add(row[i - samples]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn ycbcr_jpeg_tiles_decode_alike_through_either_decoder() {
        let tile = RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&tile)
            .unwrap();
        let expected = 64 * 64 * 3;
        let fast = jpeg_ycbcr(&bytes, (64, 64), expected).unwrap().unwrap();
        let slow = jpeg_decoder::Decoder::new(Cursor::new(&bytes))
            .decode()
            .unwrap();
        assert_eq!((fast.len(), slow.len()), (expected, expected));
        let worst = fast.iter().zip(&slow).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(worst.unwrap() <= 3, "{worst:?}");
        // A tile larger than the file's tiles is refused, and a one-channel stream is left to
        // jpeg-decoder.
        assert!(jpeg_ycbcr(&bytes, (32, 32), expected).unwrap().is_err());
        let grey = GrayImage::from_fn(16, 16, |x, _| image::Luma([(x * 16) as u8]));
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut bytes)
            .encode_image(&grey)
            .unwrap();
        assert!(jpeg_ycbcr(&bytes, (16, 16), 256).is_none());
    }

    #[test]
    fn a_deflate_bomb_stops_at_the_tile_size() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&vec![0u8; 50 << 20]).unwrap();
        let bomb = z.finish().unwrap();
        assert!(bomb.len() < 100 << 10, "{} bytes", bomb.len());
        let err = decompress(
            Compression::Deflate,
            &bomb,
            256 * 256 * 3,
            (256, 256),
            PhotometricInterpretation::RGB,
            None,
        )
        .unwrap_err();
        assert!(err.contains("decompression bomb"), "{err}");
    }

    #[test]
    fn damaged_and_short_tiles_are_errors_not_panics() {
        for compression in [
            Compression::Deflate,
            Compression::LZW,
            Compression::ZSTD,
            Compression::ModernJPEG,
            Compression::WebP,
            Compression::None,
        ] {
            let junk: Vec<u8> = (0..999u32).map(|i| (i * 7919 % 251) as u8).collect();
            let result = decompress(
                compression,
                &junk,
                64 * 64 * 3,
                (64, 64),
                PhotometricInterpretation::RGB,
                None,
            );
            assert!(result.is_err(), "{compression:?}");
        }
    }

    #[test]
    fn lzw_round_trip_and_predictor() {
        let pixels: Vec<u8> = (0..16 * 3).map(|i| (i * 5) as u8).collect();
        let mut predicted = pixels.clone();
        for i in (3..predicted.len()).rev() {
            predicted[i] = predicted[i].wrapping_sub(predicted[i - 3]);
        }
        let mut encoder = weezl::encode::Encoder::with_tiff_size_switch(weezl::BitOrder::Msb, 8);
        let packed = encoder.encode(&predicted).unwrap();
        let mut raw = lzw(&packed, predicted.len()).unwrap();
        assert_eq!(raw, predicted);
        undo_horizontal_predictor(&mut raw, 16, 3);
        assert_eq!(raw, pixels);
    }
}
