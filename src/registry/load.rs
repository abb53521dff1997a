//! Loading the register at init: fetch (S3 or file, via `crate::blob`), parse and index on a
//! blocking thread (a million rows keep a core busy for about a second, which must not stall
//! the model's download on the same runtime), time it, and log what was loaded.

use std::time::{Duration, Instant};

use super::rows::ParseError;
use super::{Registry, RegistrySettings};
use crate::error::StartupError;

/// Why the register could not be loaded; init fails with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// The file could not be fetched (names the bucket and key or the path, and the cause).
    #[error("{0}")]
    Unavailable(String),
    /// The file is not a usable register (names the row and the reason).
    #[error("registry {uri}: {error}")]
    Malformed { uri: String, error: ParseError },
}

impl From<RegistryError> for StartupError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Unavailable(_) => Self::RegistryLoad(error.to_string()),
            RegistryError::Malformed { .. } => Self::Registry(error.to_string()),
        }
    }
}

/// Fetches, parses and indexes the register; logs its size, and any skipped rows.
pub async fn load(
    settings: RegistrySettings,
    timeout: Duration,
) -> Result<Registry, RegistryError> {
    let started = Instant::now();
    let uri = settings.uri.to_string();
    let source = crate::blob::load(&settings.uri, "registry", timeout)
        .await
        .map_err(RegistryError::Unavailable)?;
    let version = source.version;
    let bytes = source.bytes;
    let parsed = tokio::task::spawn_blocking(move || Registry::parse(&bytes, settings))
        .await
        .map_err(|e| {
            RegistryError::Unavailable(format!("registry {uri}: the loader failed: {e}"))
        })?;
    let mut registry = parsed.map_err(|error| RegistryError::Malformed {
        uri: uri.clone(),
        error,
    })?;
    registry.info.version = version;
    registry.info.load_ms = crate::outcome::ms(started.elapsed());
    log(&registry);
    Ok(registry)
}

fn log(registry: &Registry) {
    let info = &registry.info;
    tracing::info!(
        registry = %info.uri,
        version = %info.version,
        format = info.format,
        records = info.records,
        points = info.points,
        footprints = info.footprints,
        bad_rows = registry.bad_rows.count,
        record_bytes = registry.record_bytes(),
        registry_load_ms = info.load_ms,
        "registry ready"
    );
    if registry.bad_rows.count > 0 {
        let examples: Vec<String> = registry
            .bad_rows
            .examples
            .iter()
            .map(ToString::to_string)
            .collect();
        tracing::warn!(
            registry = %info.uri,
            bad_rows = registry.bad_rows.count,
            first = %examples.join("; "),
            "registry rows skipped (REGISTRY_SKIP_BAD_ROWS=true)"
        );
    }
}
