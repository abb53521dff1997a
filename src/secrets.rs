//! Configuration values that may carry credentials, wrapped so that no `{:?}`, log line or
//! error message can show them: `TILE_HEADERS` values (API keys, bearer tokens) and the literal
//! query values of `TILE_URL` (`key=…`, `access_token=…`, a pre-signed signature).
//!
//! The wrappers hand the real value only to the code that sends requests; everything printable
//! is redacted. It owns redaction only; validation stays in `config` and `imagery::template`.

use std::fmt;

/// Shown in place of a secret value.
pub const REDACTED: &str = "<redacted>";

/// `TILE_HEADERS`: header names and values. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TileHeaders(Vec<(String, String)>);

impl TileHeaders {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    /// The real names and values, for the HTTP client and nothing else.
    pub fn expose(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for TileHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, _)| (name, REDACTED)))
            .finish()
    }
}

/// A URL template fit to show: each query value holding no `{placeholder}` is replaced by `…`
/// (`key=AIza…` → `key=…`), while values made of placeholders stay (`BBOX={bbox}`), so a
/// message about a template still shows its structure. Parameter names and the path stay.
pub fn redact_template(raw: &str) -> String {
    let Some((base, query)) = raw.split_once('?') else {
        return raw.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((_, value)) if value.is_empty() || value.contains('{') => param.to_string(),
            Some((name, _)) => format!("{name}=…"),
            // A bare `?token` is a value too.
            None if param.is_empty() || param.contains('{') => param.to_string(),
            None => "…".to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_never_show_in_debug() {
        let headers = TileHeaders::new(vec![
            ("Authorization".into(), "Bearer s3cret-1".into()),
            ("X-Api-Key".into(), "s3cret-2".into()),
        ]);
        let shown = format!("{headers:?} {headers:#?}");
        assert!(shown.contains("Authorization") && shown.contains("X-Api-Key"));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(headers.expose()[1].1, "s3cret-2");
    }

    #[test]
    fn literal_query_values_are_redacted_and_placeholders_kept() {
        for (raw, shown) in [
            (
                "https://maps/staticmap?center={lat},{lon}&zoom={zoom}&key=AIzaSECRET",
                "https://maps/staticmap?center={lat},{lon}&zoom={zoom}&key=…",
            ),
            (
                "https://w/wms?SERVICE=WMS&BBOX={bbox}&WIDTH={width}&HEIGHT={height}",
                "https://w/wms?SERVICE=…&BBOX={bbox}&WIDTH={width}&HEIGHT={height}",
            ),
            (
                "https://t/{z}/{x}/{y}.png?X-Amz-Signature=abc&X-Amz-Credential=AKIA",
                "https://t/{z}/{x}/{y}.png?X-Amz-Signature=…&X-Amz-Credential=…",
            ),
            (
                "https://t/{z}/{x}/{y}.png?SECRET",
                "https://t/{z}/{x}/{y}.png?…",
            ),
            ("https://t/{z}/{x}/{y}.png", "https://t/{z}/{x}/{y}.png"),
            ("https://t/{q}.jpeg?g=&", "https://t/{q}.jpeg?g=&"),
        ] {
            assert_eq!(redact_template(raw), shown, "{raw}");
        }
        let template = crate::imagery::template::TileTemplate::parse(
            "https://t/{z}/{x}/{y}?access_token=pk.SECRET",
        )
        .unwrap();
        let shown = format!("{template:?} {template:#?}");
        assert!(
            shown.contains("access_token=…") && !shown.contains("SECRET"),
            "{shown}"
        );
    }
}
