//! What `TILE_URL` names: a URL template (XYZ tiles, a static-map API, WMS — see `template`),
//! one GeoTIFF, or a mosaic index of GeoTIFFs. Decided once at init from the value's form, so a
//! typo fails the deploy with a message saying which forms exist.
//!
//! - a value with `{placeholders}` is a template;
//! - `….tif` / `….tiff` (`s3://`, `https://`, `http://` or `file://`) is one GeoTIFF;
//! - `….json` / `….geojson` is a mosaic index: a GeoJSON FeatureCollection of footprints naming
//!   each file, or a STAC ItemCollection.

use super::geotiff::Location;
use super::template::{TemplateError, TileTemplate};

/// A parsed `TILE_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Template(TileTemplate),
    /// One GeoTIFF (ideally cloud-optimized) read by ranges.
    GeoTiff(Location),
    /// An index of GeoTIFFs: each building is read from the file whose footprint contains it.
    Mosaic(Location),
}

const TIFF_ENDINGS: [&str; 2] = [".tif", ".tiff"];
const INDEX_ENDINGS: [&str; 2] = [".json", ".geojson"];

impl SourceSpec {
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let fail = |reason: String| TemplateError {
            template: crate::secrets::redact_template(raw),
            reason,
        };
        // The path's ending, without a query (a presigned URL's signature) or fragment.
        let path = raw
            .split(['?', '#'])
            .next()
            .unwrap_or(raw)
            .to_ascii_lowercase();
        let ends = |endings: &[&str]| endings.iter().any(|e| path.ends_with(e));
        let has_placeholder = raw.contains('{') || raw.contains('}');
        if has_placeholder {
            if raw.starts_with("s3://") {
                return Err(fail(
                    "s3:// names one GeoTIFF (….tif) or a mosaic index (….json), not a template \
                     with placeholders: serve tiles over https://, or point at the GeoTIFF"
                        .into(),
                ));
            }
            return TileTemplate::parse(raw).map(Self::Template);
        }
        if !(ends(&TIFF_ENDINGS) || ends(&INDEX_ENDINGS)) {
            return Err(fail(
                "has no placeholder and does not name a GeoTIFF or a mosaic index: use a template \
                 ({z}/{x}/{y}, {-y}, {q}, {lat},{lon},{zoom},{width},{height} or \
                 {bbox},{width},{height}), a GeoTIFF (s3://bucket/key.tif, https://…/file.tif, \
                 file:///path/file.tif) or a mosaic index (….json or ….geojson)"
                    .into(),
            ));
        }
        let location = Location::parse(raw).map_err(fail)?;
        Ok(if ends(&TIFF_ENDINGS) {
            Self::GeoTiff(location)
        } else {
            Self::Mosaic(location)
        })
    }

    /// The template, for the kinds that have one.
    pub fn template(&self) -> Option<&TileTemplate> {
        match self {
            Self::Template(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_form_is_recognised() {
        assert!(matches!(
            SourceSpec::parse("https://t/{z}/{x}/{y}.png").unwrap(),
            SourceSpec::Template(_)
        ));
        for raw in [
            "s3://naip-visualization/ny/2022/60cm/rgb/40073/m_4007307_sw_18_060_20220803.tif",
            "https://example.org/ortho/sheet 1.TIF",
            "https://example.org/ortho/sheet.tiff?X-Amz-Signature=abc",
            "file:///data/ortho.tif",
        ] {
            assert!(
                matches!(SourceSpec::parse(raw).unwrap(), SourceSpec::GeoTiff(_)),
                "{raw}"
            );
        }
        for raw in [
            "s3://bucket/mosaic/index.geojson",
            "https://example.org/stac/items.json",
            "file:///data/index.json",
        ] {
            assert!(
                matches!(SourceSpec::parse(raw).unwrap(), SourceSpec::Mosaic(_)),
                "{raw}"
            );
        }
    }

    #[test]
    fn every_mistake_names_the_value_and_the_forms() {
        for (raw, needle) in [
            ("s3://bucket/{z}/{x}/{y}.png", "not a template"),
            ("https://t/tile.png", "does not name a GeoTIFF"),
            ("s3://bucket", "does not name a GeoTIFF"),
            ("s3:///key.tif", "needs a bucket and a key"),
            ("s3://bucket/.tif", "needs a bucket and a key"),
            ("ftp://host/file.tif", "must start with"),
            ("file://relative/file.tif", "absolute path"),
            ("https:///file.tif", "no host"),
            // Template mistakes still come from the template parser.
            ("https://t/{z}/{x}.png", "needs {z}, {x} and {y}"),
        ] {
            let err = SourceSpec::parse(raw).unwrap_err();
            assert!(err.reason.contains(needle), "{raw}: {err}");
        }
        let err = SourceSpec::parse("https://t/x.png?key=s3cret").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}
