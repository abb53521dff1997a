//! `TILE_URL` templates: which kind of imagery source a template names (XYZ tiles, a static-map
//! API, or WMS GetMap) and the URLs of the images one chip needs.
//!
//! Only numbers this function computes ever fill a placeholder: request data (ids, properties)
//! never reaches a URL. A template is checked once at init, so a typo fails the deploy, not
//! every building.

use crate::geo::{ChipWindow, LatLon, TILE_SIZE, Tile, from_pixel};

/// What kind of source a template addresses, decided by its placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// 256-px tiles: `{z}/{x}/{y}`, `{-y}` (TMS) or `{q}` (quadkey).
    Xyz,
    /// One image centred on a point: `{lat} {lon} {zoom} {width} {height}` (`{zoom512}` for
    /// APIs counting zoom in 512-px tiles, as Mapbox does).
    StaticMap,
    /// WMS GetMap: `{bbox}` (EPSG:3857) with `{width} {height}`.
    Wms,
}

/// A parsed, validated `TILE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct TileTemplate {
    raw: String,
    kind: SourceKind,
}

/// Literal query values (API keys, signatures) are redacted: a template may hold credentials.
impl std::fmt::Debug for TileTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TileTemplate")
            .field("raw", &crate::secrets::redact_template(&self.raw))
            .field("kind", &self.kind)
            .finish()
    }
}

/// One image a chip needs and where its top-left pixel lands in the chip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePart {
    pub url: String,
    /// The size the image should have (256 for a tile, the chip's side for a static map or
    /// WMS image); other sizes are resized to it, with a warning.
    pub width: u32,
    pub height: u32,
    pub dx: i64,
    pub dy: i64,
}

const XYZ: &[&str] = &["z", "x", "y", "-y", "q"];
const STATIC: &[&str] = &["lat", "lon", "zoom", "width", "height"];
/// Zoom counted in 512-px tiles (Mapbox GL styles, hence Mapbox Static Images): one less than
/// the 256-px zoom showing the same ground resolution.
const ZOOM_512: &str = "zoom512";
const WMS: &[&str] = &["bbox", "width", "height"];

/// A template that cannot be used; the message shows the template (literal query values
/// redacted: they may be keys) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TILE_URL {template:?}: {reason}")]
pub struct TemplateError {
    pub template: String,
    pub reason: String,
}

impl TileTemplate {
    pub fn parse(raw: &str) -> Result<Self, TemplateError> {
        let fail = |reason: String| TemplateError {
            template: crate::secrets::redact_template(raw),
            reason,
        };
        let scheme_ok = ["http://", "https://", "file://"]
            .iter()
            .any(|s| raw.starts_with(s));
        if !scheme_ok {
            return Err(fail("must start with http://, https:// or file://".into()));
        }
        let names = placeholders(raw).map_err(fail)?;
        if names.is_empty() {
            return Err(fail(
                "has no placeholder: use {z}/{x}/{y}, {-y}, {q}, {lat},{lon},{zoom},{width},{height} or {bbox},{width},{height}"
                    .into(),
            ));
        }
        let known: Vec<&str> = XYZ
            .iter()
            .chain(STATIC)
            .chain(&[ZOOM_512])
            .chain(WMS)
            .copied()
            .collect();
        if let Some(unknown) = names.iter().find(|n| !known.contains(&n.as_str())) {
            return Err(fail(format!(
                "unknown placeholder {{{unknown}}}; known: {}",
                known
                    .iter()
                    .map(|k| format!("{{{k}}}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
        let has = |n: &str| names.iter().any(|m| m == n);
        let uses_xyz = XYZ.iter().any(|n| has(n));
        let uses_static = ["lat", "lon", "zoom", ZOOM_512].iter().any(|n| has(n));
        let uses_wms = has("bbox");
        let kinds = [uses_xyz, uses_static, uses_wms]
            .iter()
            .filter(|b| **b)
            .count();
        if kinds > 1 {
            return Err(fail(
                "mixes placeholders of different source kinds (XYZ {z}{x}{y}{-y}{q}, static map {lat}{lon}{zoom}, WMS {bbox})"
                    .into(),
            ));
        }
        let kind = if uses_xyz {
            let rows = has("y") || has("-y");
            if has("q") && (has("z") || has("x") || rows) {
                return Err(fail(
                    "{q} (quadkey) already holds zoom, column and row; use it alone".into(),
                ));
            }
            let full_xyz = has("z") && has("x") && rows;
            if !has("q") && !full_xyz {
                return Err(fail(
                    "an XYZ template needs {z}, {x} and {y} (or {-y} for TMS), or {q}".into(),
                ));
            }
            if has("y") && has("-y") {
                return Err(fail("use {y} (XYZ) or {-y} (TMS), not both".into()));
            }
            if has("width") || has("height") {
                return Err(fail(
                    "XYZ tiles are always 256 px: {width}/{height} make no sense here".into(),
                ));
            }
            SourceKind::Xyz
        } else if uses_static {
            if has("zoom") && has(ZOOM_512) {
                return Err(fail(
                    "use {zoom} (256-px tiles, e.g. Google) or {zoom512} (512-px tiles, e.g. Mapbox), not both"
                        .into(),
                ));
            }
            let present = |n: &str| has(n) || (n == "zoom" && has(ZOOM_512));
            let missing: Vec<String> = STATIC
                .iter()
                .filter(|n| !present(n))
                .map(|n| format!("{{{n}}}"))
                .collect();
            if !missing.is_empty() {
                return Err(fail(format!(
                    "a static-map template needs {{lat}} {{lon}} {{zoom}} (or {{zoom512}}) {{width}} {{height}}; missing {}",
                    missing.join(" ")
                )));
            }
            SourceKind::StaticMap
        } else if uses_wms {
            if !(has("width") && has("height")) {
                return Err(fail(
                    "a WMS template needs {bbox} with {width} and {height}".into(),
                ));
            }
            SourceKind::Wms
        } else {
            return Err(fail("{width}/{height} alone do not locate an image: add {bbox} (WMS) or {lat},{lon},{zoom} (static map)".into()));
        };
        Ok(Self {
            raw: raw.to_string(),
            kind,
        })
    }

    pub fn kind(&self) -> SourceKind {
        self.kind
    }

    /// The images covering `window`, each with its URL and placement.
    pub fn plan(&self, window: &ChipWindow) -> Vec<ImagePart> {
        match self.kind {
            SourceKind::Xyz => window
                .tiles()
                .into_iter()
                .map(|t| ImagePart {
                    url: self.tile_url(&t.tile),
                    width: TILE_SIZE,
                    height: TILE_SIZE,
                    dx: t.dx,
                    dy: t.dy,
                })
                .collect(),
            SourceKind::StaticMap => {
                let (cx, cy) = window.centre();
                let centre = from_pixel(cx, cy, window.zoom);
                vec![whole_chip(self.static_url(centre, window), window)]
            }
            SourceKind::Wms => vec![whole_chip(self.wms_url(window), window)],
        }
    }

    fn tile_url(&self, t: &Tile) -> String {
        self.fill(|name| match name {
            "z" => Some(t.z.to_string()),
            "x" => Some(t.x.to_string()),
            "y" => Some(t.y.to_string()),
            "-y" => Some(t.tms_y().to_string()),
            "q" => Some(t.quadkey()),
            _ => None,
        })
    }

    /// The centre is the window's centre (a pixel corner, or a pixel centre for an odd size),
    /// so a server placing it at the image's centre renders exactly the window. Eight
    /// decimals (≈ 1 mm) keep that exact to a tenth of a pixel up to zoom 24.
    fn static_url(&self, centre: LatLon, window: &ChipWindow) -> String {
        self.fill(|name| match name {
            "lat" => Some(format!("{:.8}", centre.lat)),
            "lon" => Some(format!("{:.8}", centre.lon)),
            "zoom" => Some(window.zoom.to_string()),
            "zoom512" => Some((i32::from(window.zoom) - 1).to_string()),
            "width" | "height" => Some(window.size.to_string()),
            _ => None,
        })
    }

    fn wms_url(&self, window: &ChipWindow) -> String {
        let (minx, miny, maxx, maxy) = window.bbox_3857();
        self.fill(|name| match name {
            "bbox" => Some(format!("{minx:.3},{miny:.3},{maxx:.3},{maxy:.3}")),
            "width" | "height" => Some(window.size.to_string()),
            _ => None,
        })
    }

    /// Replaces each `{name}` by `value(name)`; parse() guarantees every name is known.
    fn fill(&self, value: impl Fn(&str) -> Option<String>) -> String {
        let mut out = String::with_capacity(self.raw.len() + 16);
        let mut rest = self.raw.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let close = open + rest[open..].find('}').expect("validated template");
            let name = &rest[open + 1..close];
            out.push_str(&value(name).unwrap_or_default());
            rest = &rest[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// Static-map and WMS images are the whole chip: one image of the window's size at (0, 0).
fn whole_chip(url: String, window: &ChipWindow) -> ImagePart {
    ImagePart {
        url,
        width: window.size,
        height: window.size,
        dx: 0,
        dy: 0,
    }
}

/// The `{name}`s in a template, in order; unbalanced braces are an error.
fn placeholders(raw: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = raw;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a '}' without a matching '{'".into());
        }
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or("has a '{' without a matching '}'")?;
        let name = &after[..close];
        if name.contains('{') {
            return Err("has a '{' inside a placeholder".into());
        }
        names.push(name.to_string());
        rest = &after[close + 1..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> ChipWindow {
        ChipWindow {
            left: 256 * 5 + 240,
            top: 256 * 9 + 250,
            size: 32,
            zoom: 4,
        }
    }

    #[test]
    fn xyz_tms_and_quadkey_urls() {
        let t = TileTemplate::parse("https://tiles.example/{z}/{x}/{y}.png").unwrap();
        assert_eq!(t.kind(), SourceKind::Xyz);
        let urls: Vec<_> = t
            .plan(&window())
            .into_iter()
            .map(|p| (p.url, p.dx, p.dy))
            .collect();
        assert_eq!(
            urls,
            vec![
                ("https://tiles.example/4/5/9.png".to_string(), -240, -250),
                ("https://tiles.example/4/6/9.png".to_string(), 16, -250),
                ("https://tiles.example/4/5/10.png".to_string(), -240, 6),
                ("https://tiles.example/4/6/10.png".to_string(), 16, 6),
            ]
        );
        let esri = TileTemplate::parse("https://e/tile/{z}/{y}/{x}").unwrap();
        assert_eq!(esri.plan(&window())[0].url, "https://e/tile/4/9/5");
        let tms = TileTemplate::parse("http://t/{z}/{x}/{-y}.jpg").unwrap();
        assert_eq!(tms.plan(&window())[0].url, "http://t/4/5/6.jpg");
        let bing = TileTemplate::parse("https://ecn.t/a{q}.jpeg?g=1").unwrap();
        assert_eq!(
            bing.plan(&window())[0].url,
            format!(
                "https://ecn.t/a{}.jpeg?g=1",
                Tile { z: 4, x: 5, y: 9 }.quadkey()
            )
        );
    }

    #[test]
    fn static_map_and_wms_ask_for_one_chip_sized_image() {
        let s = TileTemplate::parse("https://s/{lon},{lat},{zoom}/{width}x{height}.png").unwrap();
        assert_eq!(s.kind(), SourceKind::StaticMap);
        let parts = s.plan(&window());
        assert_eq!(parts.len(), 1);
        assert!(parts[0].url.ends_with(",4/32x32.png"), "{}", parts[0].url);
        assert_eq!(
            (parts[0].width, parts[0].height, parts[0].dx, parts[0].dy),
            (32, 32, 0, 0)
        );

        let w = TileTemplate::parse("https://w/wms?SERVICE=WMS&REQUEST=GetMap&CRS=EPSG:3857&BBOX={bbox}&WIDTH={width}&HEIGHT={height}").unwrap();
        assert_eq!(w.kind(), SourceKind::Wms);
        let url = &w.plan(&window())[0].url;
        assert!(url.contains("&WIDTH=32&HEIGHT=32"), "{url}");
        let bbox: Vec<f64> = url
            .split("BBOX=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(bbox.len(), 4);
        assert!(bbox[0] < bbox[2] && bbox[1] < bbox[3]);
    }

    /// Numbers between `prefix` and the next `end` in `url`, split on commas.
    fn numbers(url: &str, prefix: &str, end: char) -> Vec<f64> {
        let rest = &url[url.find(prefix).unwrap() + prefix.len()..];
        rest[..rest.find(end).unwrap_or(rest.len())]
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect()
    }

    #[test]
    fn static_map_centre_and_wms_bbox_give_back_the_window_exactly() {
        for (size, zoom) in [(32, 19), (45, 24), (64, 3)] {
            let p = LatLon::new(52.2297, 21.0122).unwrap();
            let window = ChipWindow::centred_on(p, zoom, size);
            let s = TileTemplate::parse("https://s/{lat},{lon}/{zoom}/{width}x{height}").unwrap();
            let ll = numbers(&s.plan(&window)[0].url, "https://s/", '/');
            let (cx, cy) = crate::geo::to_pixel(LatLon::new(ll[0], ll[1]).unwrap(), zoom);
            let half = f64::from(size) / 2.0;
            assert!(
                (cx - half - window.left as f64).abs() < 0.1,
                "{size}@{zoom}: {cx}"
            );
            assert!(
                (cy - half - window.top as f64).abs() < 0.1,
                "{size}@{zoom}: {cy}"
            );

            let w = TileTemplate::parse("https://w/?BBOX={bbox}&W={width}&H={height}").unwrap();
            let b = numbers(&w.plan(&window)[0].url, "BBOX=", '&');
            let per_pixel = 2.0 * crate::geo::ORIGIN_SHIFT_M / crate::geo::world_pixels(zoom);
            let left = (b[0] + crate::geo::ORIGIN_SHIFT_M) / per_pixel;
            let top = (crate::geo::ORIGIN_SHIFT_M - b[3]) / per_pixel;
            assert!(
                (left - window.left as f64).abs() < 0.1,
                "{size}@{zoom}: {left}"
            );
            assert!(
                (top - window.top as f64).abs() < 0.1,
                "{size}@{zoom}: {top}"
            );
            assert!(((b[2] - b[0]) / per_pixel - f64::from(size)).abs() < 0.1);
            assert!(((b[3] - b[1]) / per_pixel - f64::from(size)).abs() < 0.1);
        }
    }

    #[test]
    fn zoom512_counts_in_512_px_tiles() {
        let m = TileTemplate::parse(
            "https://api.mapbox.com/styles/v1/mapbox/satellite-v9/static/{lon},{lat},{zoom512}/{width}x{height}",
        )
        .unwrap();
        assert_eq!(m.kind(), SourceKind::StaticMap);
        assert!(
            m.plan(&window())[0].url.contains(",3/32x32"),
            "zoom 4 is 3 in 512-px tiles"
        );
    }

    #[test]
    fn bad_templates_are_rejected_with_the_template_and_the_reason() {
        for (raw, needle) in [
            ("https://t/tile.png", "no placeholder"),
            ("https://t/{z}/{x}/{row}.png", "unknown placeholder {row}"),
            ("https://t/{z}/{x}.png", "needs {z}, {x} and {y}"),
            ("https://t/{z}/{x}/{y}?bbox={bbox}", "mixes"),
            ("https://t/{z}/{x}/{y", "without a matching"),
            ("ftp://t/{z}/{x}/{y}", "must start with"),
            ("https://t/{lat},{lon}", "missing"),
            ("https://t/{bbox}", "needs {bbox} with {width}"),
            ("https://t/{q}/{z}", "use it alone"),
            (
                "https://t/{lat},{lon},{zoom},{zoom512}/{width}x{height}",
                "not both",
            ),
            ("https://t/{lat},{lon}/{width}x{height}", "missing {zoom}"),
        ] {
            let err = TileTemplate::parse(raw).unwrap_err();
            assert!(err.to_string().contains(raw), "{err}");
            assert!(err.reason.contains(needle), "{raw}: {err}");
        }
    }

    #[test]
    fn keys_in_a_template_never_reach_its_error_or_debug_output() {
        let err = TileTemplate::parse("https://t/{z}/{x}/{row}.png?key=AIzaSECRET").unwrap_err();
        assert!(
            err.to_string().contains("{row}.png?key=…"),
            "the template's shape is still shown: {err}"
        );
        assert!(!format!("{err} {err:?}").contains("AIzaSECRET"), "{err}");
        let ok = TileTemplate::parse("https://t/{z}/{x}/{y}.png?access_token=pk.SECRET").unwrap();
        assert!(!format!("{ok:?}").contains("pk.SECRET"), "{ok:?}");
    }
}
