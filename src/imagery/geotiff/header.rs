//! A GeoTIFF's header, read once per file per sandbox: its levels (full resolution and
//! overviews, each with its internal mask if any), where its pixels are on the ground, its CRS,
//! and which bands make the chip's red, green and blue. Everything a file can get wrong is
//! found here and reported naming the file, before any tile is read.

use std::sync::Arc;

use async_tiff::ImageFileDirectory;
use async_tiff::metadata::TiffMetadataReader;
use async_tiff::tags::{
    Compression, ExtraSamples, PhotometricInterpretation, PlanarConfiguration, SampleFormat,
};

use super::Location;
use super::crs::Crs;
use super::read::HeaderFetch;

/// Largest internal tile side we decode (COGs use 256 or 512).
pub const MAX_TILE_SIDE: u32 = 2048;
/// Largest decoded tile (side × side × bands): what one decode may allocate, whatever the
/// compressed bytes claim.
pub const MAX_TILE_BYTES: u64 = 16 << 20;
/// Most bands a file may have (NAIP has 4; multispectral files a dozen).
pub const MAX_BANDS: u16 = 16;
/// Most image directories we read (a COG has one per level, and one per mask level).
const MAX_IFDS: usize = 64;
/// Compressions we decode.
const SUPPORTED: &str = "JPEG, Deflate, LZW, ZSTD, WebP or none";

/// Which band is red, green and blue (0-based), and which holds alpha, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bands {
    pub rgb: [usize; 3],
    pub alpha: Option<usize>,
}

/// One resolution of the file: the full image or an overview.
#[derive(Debug)]
pub struct Level {
    pub ifd: ImageFileDirectory,
    /// Its internal mask (GDAL's per-dataset mask, 1 bit a pixel), if the file has one.
    pub mask: Option<ImageFileDirectory>,
    pub width: u32,
    pub height: u32,
    pub tile_width: u32,
    pub tile_height: u32,
    /// Full-resolution pixels per pixel of this level, across and down.
    pub factor: (f64, f64),
}

impl Level {
    pub fn tiles_across(&self) -> u32 {
        self.width.div_ceil(self.tile_width)
    }

    pub fn tiles_down(&self) -> u32 {
        self.height.div_ceil(self.tile_height)
    }

    /// The bytes of tile (`col`, `row`) in the file, from its directory.
    pub fn tile_range(&self, mask: bool, col: u32, row: u32) -> Option<std::ops::Range<u64>> {
        let ifd = if mask { self.mask.as_ref()? } else { &self.ifd };
        let index = (row * self.tiles_across() + col) as usize;
        let offset = *ifd.tile_offsets()?.get(index)?;
        let count = *ifd.tile_byte_counts()?.get(index)?;
        Some(offset..offset.checked_add(count)?)
    }
}

/// Full-resolution pixel ↔ file coordinates: `x = a + col·b + row·c`, `y = d + col·e + row·f`,
/// for the pixel corner (col, row) (GDAL's geotransform).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoTransform(pub [f64; 6]);

impl GeoTransform {
    /// The full-resolution pixel position (fractional, corner convention) of file coordinates.
    pub fn pixel(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        let det = b * f - c * e;
        let (dx, dy) = (x - a, y - d);
        ((f * dx - c * dy) / det, (b * dy - e * dx) / det)
    }
}

/// What the chips of one file need to know about it.
#[derive(Debug)]
pub struct Header {
    pub location: Location,
    /// Finest first.
    pub levels: Vec<Level>,
    pub transform: GeoTransform,
    pub crs: Crs,
    pub bands: Bands,
    /// `GDAL_NODATA`: pixels whose every chosen band equals it hold no data.
    pub nodata: Option<u8>,
    /// Header bytes read (≈ the memory its directories take; the header cache's measure).
    pub header_bytes: u64,
}

/// A file that cannot be read: the message names the file and what is wrong.
pub type HeaderError = crate::error::BuildingError;

impl Header {
    /// Reads and checks the header of the file behind `fetch`. `bands` is `BANDS` (1-based),
    /// `None` for the file's own red, green and blue.
    pub async fn read(
        fetch: &HeaderFetch,
        bands: Option<[u16; 3]>,
    ) -> Result<Arc<Self>, HeaderError> {
        use crate::error::{BuildingError, ErrorCode};
        let location = fetch.location.clone();
        let invalid =
            |why: String| BuildingError::new(ErrorCode::ImageInvalid, format!("{location}: {why}"));
        let head = fetch.prefix(8).await?;
        if head.len() < 8 || !(head.starts_with(b"II") || head.starts_with(b"MM")) {
            return Err(invalid(format!(
                "not a TIFF (it starts with {:?})",
                String::from_utf8_lossy(&head[..head.len().min(8)])
            )));
        }
        let mut reader = TiffMetadataReader::try_open(fetch)
            .await
            .map_err(|e| invalid(format!("not a readable TIFF: {e}")))?;
        let mut ifds = Vec::new();
        while let Some(ifd) = reader
            .read_next_ifd(fetch)
            .await
            .map_err(|e| invalid(format!("a broken image directory: {e}")))?
        {
            ifds.push(ifd);
            if ifds.len() > MAX_IFDS {
                return Err(invalid(format!("more than {MAX_IFDS} image directories")));
            }
        }
        let header_bytes = fetch.bytes_read().await;
        Self::from_ifds(location.clone(), ifds, bands, header_bytes)
            .map(Arc::new)
            .map_err(invalid)
    }

    fn from_ifds(
        location: Location,
        ifds: Vec<ImageFileDirectory>,
        bands: Option<[u16; 3]>,
        header_bytes: u64,
    ) -> Result<Self, String> {
        let mut images = Vec::new();
        let mut masks = Vec::new();
        for ifd in ifds {
            // NewSubfileType bit 2: a transparency mask.
            if ifd.new_subfile_type().unwrap_or(0) & 4 != 0 {
                masks.push(ifd);
            } else {
                images.push(ifd);
            }
        }
        let Some(first) = images.first() else {
            return Err("no image in the file".into());
        };
        let transform = geotransform(first)?;
        let code = first
            .geo_key_directory()
            .and_then(|keys| keys.epsg_code())
            .ok_or("has no CRS in its GeoKeys (not a GeoTIFF?): assign one, e.g. `gdal_edit -a_srs EPSG:2180 file.tif`")?;
        let crs = Crs::from_epsg(code)?;
        let bands = choose_bands(first, bands)?;
        let nodata = match first.gdal_nodata().map(str::trim) {
            None => None,
            Some(text) => {
                let value: f64 = text
                    .parse()
                    .map_err(|_| format!("a nodata value {text:?} that is not a number"))?;
                (value.fract() == 0.0 && (0.0..=255.0).contains(&value)).then_some(value as u8)
            }
        };
        let (full_w, full_h) = (first.image_width(), first.image_height());
        let mut levels = Vec::new();
        for ifd in images {
            check_image(&ifd)?;
            let (width, height) = (ifd.image_width(), ifd.image_height());
            let mask = masks
                .iter()
                .position(|m| (m.image_width(), m.image_height()) == (width, height))
                .map(|i| masks.swap_remove(i));
            if let Some(mask) = &mask {
                check_mask(mask)?;
            }
            levels.push(Level {
                tile_width: ifd.tile_width().unwrap_or(0),
                tile_height: ifd.tile_height().unwrap_or(0),
                factor: (
                    f64::from(full_w) / f64::from(width),
                    f64::from(full_h) / f64::from(height),
                ),
                width,
                height,
                ifd,
                mask,
            });
        }
        levels.sort_by_key(|l| std::cmp::Reverse(l.width));
        Ok(Self {
            location,
            levels,
            transform,
            crs,
            bands,
            nodata,
            header_bytes,
        })
    }
}

/// The full-resolution geotransform from ModelTransformation, or ModelTiepoint +
/// ModelPixelScale (a PixelIsPoint raster's tie point is a pixel's centre, as GDAL reads it).
fn geotransform(ifd: &ImageFileDirectory) -> Result<GeoTransform, String> {
    let none = "has no georeferencing (no ModelTiepoint + ModelPixelScale or ModelTransformation \
                tags): georeference it, e.g. `gdal_translate -a_ullr … -a_srs EPSG:…`";
    let t = if let Some(m) = ifd.model_transformation().filter(|m| m.len() >= 16) {
        [m[3], m[0], m[1], m[7], m[4], m[5]]
    } else {
        let (Some(tie), Some(scale)) = (ifd.model_tiepoint(), ifd.model_pixel_scale()) else {
            return Err(none.into());
        };
        if tie.len() < 6 || scale.len() < 2 {
            return Err(none.into());
        }
        let (sx, sy) = (scale[0], scale[1]);
        let mut t = [
            tie[3] - tie[0] * sx,
            sx,
            0.0,
            tie[4] + tie[1] * sy,
            0.0,
            -sy,
        ];
        let pixel_is_point = ifd.geo_key_directory().and_then(|k| k.raster_type) == Some(2);
        if pixel_is_point {
            t[0] -= sx / 2.0;
            t[3] += sy / 2.0;
        }
        t
    };
    let det = t[1] * t[5] - t[2] * t[4];
    if !t.iter().all(|v| v.is_finite()) || det == 0.0 {
        return Err(format!("its georeferencing is degenerate ({t:?})"));
    }
    Ok(GeoTransform(t))
}

fn check_image(ifd: &ImageFileDirectory) -> Result<(), String> {
    let (Some(tw), Some(th)) = (ifd.tile_width(), ifd.tile_height()) else {
        return Err(
            "is not tiled (its pixels are in strips), so a chip would need whole strips: \
                    convert it to a cloud-optimized GeoTIFF with `gdal_translate -of COG in.tif \
                    out.tif` or `rio cogeo create in.tif out.tif`"
                .into(),
        );
    };
    if tw == 0 || th == 0 || tw > MAX_TILE_SIDE || th > MAX_TILE_SIDE {
        return Err(format!(
            "internal tiles of {tw}x{th} px (at most {MAX_TILE_SIDE} a side)"
        ));
    }
    let (w, h) = (ifd.image_width(), ifd.image_height());
    if w == 0 || h == 0 {
        return Err(format!("an image of {w}x{h} px"));
    }
    let tiles = u64::from(w.div_ceil(tw)) * u64::from(h.div_ceil(th));
    let listed = ifd.tile_offsets().map_or(0, <[u64]>::len) as u64;
    let counts = ifd.tile_byte_counts().map_or(0, <[u64]>::len) as u64;
    if listed < tiles || counts < tiles {
        return Err(format!(
            "declares {w}x{h} px in {tiles} tiles of {tw}x{th} but lists {listed} tile offsets"
        ));
    }
    if ifd.planar_configuration() != PlanarConfiguration::Chunky {
        return Err(
            "stores each band separately (PLANARCONFIG=SEPARATE): convert it with \
                    `gdal_translate -of COG in.tif out.tif`"
                .into(),
        );
    }
    if ifd.bits_per_sample().iter().any(|b| *b != 8)
        || ifd.sample_format().iter().any(|f| *f != SampleFormat::Uint)
    {
        return Err(format!(
            "{}-bit samples; only 8-bit imagery is supported: scale it, e.g. `gdal_translate \
             -ot Byte -scale -of COG in.tif out.tif`",
            ifd.bits_per_sample().first().copied().unwrap_or(0)
        ));
    }
    match ifd.compression() {
        Compression::None
        | Compression::Deflate
        | Compression::OldDeflate
        | Compression::LZW
        | Compression::ModernJPEG
        | Compression::ZSTD
        | Compression::WebP => {}
        other => {
            return Err(format!(
                "compression {other:?} is not supported ({SUPPORTED}): convert it with \
                 `gdal_translate -of COG -co COMPRESS=DEFLATE in.tif out.tif`"
            ));
        }
    }
    match ifd.photometric_interpretation() {
        PhotometricInterpretation::RGB | PhotometricInterpretation::BlackIsZero => {}
        PhotometricInterpretation::YCbCr if ifd.compression() == Compression::ModernJPEG => {}
        other => {
            return Err(format!(
                "photometric interpretation {other:?} is not supported (RGB, greyscale, or \
                 YCbCr JPEG): expand it, e.g. `gdal_translate -expand rgb -of COG in.tif out.tif`"
            ));
        }
    }
    Ok(())
}

fn check_mask(ifd: &ImageFileDirectory) -> Result<(), String> {
    let ok = ifd.tile_width().is_some()
        && ifd.bits_per_sample() == [1]
        && ifd.samples_per_pixel() == 1
        && matches!(
            ifd.compression(),
            Compression::None
                | Compression::Deflate
                | Compression::OldDeflate
                | Compression::LZW
                | Compression::ZSTD
        )
        && ifd
            .predictor()
            .is_none_or(|p| p == async_tiff::tags::Predictor::None);
    if ok {
        Ok(())
    } else {
        Err("an internal mask this reader cannot use (expected GDAL's tiled 1-bit mask)".into())
    }
}

/// Red, green and blue from `BANDS` (1-based) or the file's own layout; alpha from ExtraSamples.
fn choose_bands(ifd: &ImageFileDirectory, wanted: Option<[u16; 3]>) -> Result<Bands, String> {
    let samples = ifd.samples_per_pixel();
    if samples == 0 || samples > MAX_BANDS {
        return Err(format!("{samples} bands (1 to {MAX_BANDS} are supported)"));
    }
    let extra = ifd.extra_samples().unwrap_or(&[]);
    let colour = usize::from(samples) - extra.len().min(usize::from(samples));
    let alpha = extra
        .iter()
        .position(|e| {
            matches!(
                e,
                ExtraSamples::AssociatedAlpha | ExtraSamples::UnassociatedAlpha
            )
        })
        .map(|i| colour + i);
    let rgb = match wanted {
        Some(b) => {
            if let Some(bad) = b.iter().find(|i| **i == 0 || **i > samples) {
                return Err(format!(
                    "BANDS names band {bad}, but the file has {samples} (1..={samples})"
                ));
            }
            b.map(|i| usize::from(i) - 1)
        }
        None if samples >= 3 => [0, 1, 2],
        // Greyscale, with or without alpha.
        None => [0, 0, 0],
    };
    // A band chosen as a colour (`BANDS=4,3,2` of a file calling band 4 alpha) is not a mask.
    let alpha = alpha.filter(|a| !rgb.contains(a));
    Ok(Bands { rgb, alpha })
}
