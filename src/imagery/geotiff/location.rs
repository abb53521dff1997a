//! Where a GeoTIFF or a mosaic index lives: S3, HTTP(S) or a local file; and how an index's
//! relative paths resolve against the index's own location (STAC catalogues use relative hrefs).

use std::path::PathBuf;

/// A file's location. `Display` hides an HTTP query (presigned signatures live there).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    S3 { bucket: String, key: String },
    Http(String),
    File(PathBuf),
}

impl Location {
    /// `s3://bucket/key`, `http(s)://host/path` or `file:///absolute/path`. The error says what
    /// is wrong (the caller adds which value).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if let Some(rest) = raw.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let name = key.rsplit('/').next().unwrap_or("");
            if bucket.is_empty() || key.is_empty() || name.starts_with('.') {
                return Err(
                    "an S3 location needs a bucket and a key: s3://bucket/path/file.tif".into(),
                );
            }
            return Ok(Self::S3 {
                bucket: bucket.into(),
                key: key.into(),
            });
        }
        if let Some(path) = raw.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(
                    "a file:// location needs an absolute path: file:///data/file.tif".into(),
                );
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        for scheme in ["https://", "http://"] {
            if let Some(rest) = raw.strip_prefix(scheme) {
                if rest.starts_with('/') || rest.is_empty() {
                    return Err(format!("{scheme} with no host"));
                }
                return Ok(Self::Http(raw.into()));
            }
        }
        Err("must start with http://, https://, file:// or s3://".into())
    }

    /// `href` from an index at `self`: absolute locations stand, relative ones (`q0.tif`,
    /// `../2024/q0.tif`) are taken from the index's folder, as a browser resolves a link.
    pub fn resolve(&self, href: &str) -> Result<Self, String> {
        if href.contains("://") {
            return Self::parse(href);
        }
        if href.starts_with('/') {
            return match self {
                Self::File(_) => Ok(Self::File(PathBuf::from(href))),
                _ => Err(format!(
                    "{href:?}: an absolute path needs a scheme (s3://, https://)"
                )),
            };
        }
        // `keep`: leading parts `..` never climbs above (the host of a URL, the root of a path).
        let join = |base: &str, keep: usize| -> String {
            let mut parts: Vec<&str> = base.split('/').collect();
            parts.pop();
            for segment in href.split('/') {
                match segment {
                    "." | "" => {}
                    ".." => {
                        if parts.len() > keep {
                            parts.pop();
                        }
                    }
                    s => parts.push(s),
                }
            }
            parts.join("/")
        };
        Ok(match self {
            Self::S3 { bucket, key } => Self::S3 {
                bucket: bucket.clone(),
                key: join(key, 0).trim_start_matches('/').to_string(),
            },
            Self::Http(url) => {
                let base = url.split(['?', '#']).next().unwrap_or(url);
                Self::Http(join(base, 3))
            }
            Self::File(path) => Self::File(PathBuf::from(join(&path.to_string_lossy(), 1))),
        })
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::Http(url) => f.write_str(&crate::imagery::fetch::redact(url)),
            Self::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_hrefs_resolve_against_the_index() {
        let s3 = Location::parse("s3://b/mosaic/index.json").unwrap();
        assert_eq!(
            s3.resolve("q0.tif").unwrap().to_string(),
            "s3://b/mosaic/q0.tif"
        );
        assert_eq!(
            s3.resolve("./a/q0.tif").unwrap().to_string(),
            "s3://b/mosaic/a/q0.tif"
        );
        assert_eq!(
            s3.resolve("../q0.tif").unwrap().to_string(),
            "s3://b/q0.tif"
        );
        assert_eq!(
            s3.resolve("https://h/x.tif").unwrap(),
            Location::Http("https://h/x.tif".into())
        );
        let http = Location::parse("https://h/stac/items.json?token=1").unwrap();
        assert_eq!(
            http.resolve("a.tif").unwrap(),
            Location::Http("https://h/stac/a.tif".into())
        );
        let file = Location::parse("file:///data/m/index.geojson").unwrap();
        assert_eq!(
            file.resolve("q.tif").unwrap(),
            Location::File("/data/m/q.tif".into())
        );
        assert_eq!(
            file.resolve("/elsewhere/q.tif").unwrap(),
            Location::File("/elsewhere/q.tif".into())
        );
        assert!(s3.resolve("/abs.tif").is_err());
    }

    #[test]
    fn queries_never_reach_messages() {
        let l = Location::parse("https://h/a.tif?X-Amz-Signature=SECRET").unwrap();
        assert!(!l.to_string().contains("SECRET"), "{l}");
    }
}
