//! The closed set of errors a caller or an operator can see: per-building errors (one building
//! failed, the rest of the batch goes on), request-level errors (the whole request is refused)
//! and start-up errors (the function cannot serve at all; Lambda shows their `errorType`).
//!
//! Codes and `errorType`s are part of the public contract (README "Errors"): add, never rename.

use serde::Serialize;

/// Why one building got no prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The building entry is not an object, or its `id` is not a string/number or too long.
    InvalidBuilding,
    /// `lat`/`lon` missing, not finite numbers, or outside web-mercator's range.
    InvalidCoordinates,
    /// A GeoJSON feature's geometry is missing, of an unsupported type, malformed, or has no
    /// area (so no centroid).
    InvalidGeometry,
    /// The imagery could not be fetched (HTTP error, timeout, connection refused, missing file).
    ImageUnavailable,
    /// The imagery arrived but is not a usable image (HTML error page, truncated, too large).
    ImageInvalid,
    /// The invocation's deadline came before this building's chip was ready.
    DeadlineExceeded,
    /// ONNX Runtime failed (or a worker panicked) on the batch holding this building.
    InferenceFailed,
    /// GeoTIFF sources: no file covers the building, or its chip is mostly outside the data
    /// (masked, transparent, nodata or beyond the image).
    NoCoverage,
}

impl ErrorCode {
    /// The snake_case name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidBuilding => "invalid_building",
            Self::InvalidCoordinates => "invalid_coordinates",
            Self::InvalidGeometry => "invalid_geometry",
            Self::ImageUnavailable => "image_unavailable",
            Self::ImageInvalid => "image_invalid",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::InferenceFailed => "inference_failed",
            Self::NoCoverage => "no_coverage",
        }
    }
}

/// A per-building error: `{"code": "...", "message": "..."}` in the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BuildingError {
    pub code: ErrorCode,
    pub message: String,
}

impl BuildingError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `deadline_exceeded`, in its one wording wherever the deadline caught the building
    /// (waiting for a download, for a batch, or never started).
    pub fn deadline_exceeded() -> Self {
        Self::new(
            ErrorCode::DeadlineExceeded,
            "not predicted before the invocation's deadline (DEADLINE_MARGIN_MS before Lambda's \
             timeout): send fewer buildings per request, or raise the function's timeout",
        )
    }
}

/// Why a whole request was refused (nothing was predicted).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// Not JSON, an unknown shape, no buildings array, an empty list, or bad base64.
    #[error("{0}")]
    Invalid(String),
    /// More buildings than `MAX_BUILDINGS`.
    #[error(
        "{count} buildings in one request; the limit is {limit} (MAX_BUILDINGS): split the request"
    )]
    TooManyBuildings { count: usize, limit: usize },
    /// A body larger than the function accepts.
    #[error("request body is {size} bytes; the limit is {limit}")]
    PayloadTooLarge { size: usize, limit: usize },
    /// The answer would be over Lambda's response limit (the echoed `properties` of a large
    /// request can push it there). Refused by us with a reason, rather than by Lambda with none.
    #[error(
        "the answer would be {size} bytes; Lambda's response limit is {limit}: send fewer buildings or smaller properties"
    )]
    ResponseTooLarge { size: usize, limit: usize },
    /// With `include_chips`, the answer could be over Lambda's response limit: every chip's
    /// JPEG has a known bound, so this is refused before any image is fetched, saying how
    /// many of the buildings would fit.
    #[error(
        "with include_chips, the answer for {buildings} buildings could reach {size} bytes, over          Lambda's response limit of {limit}: at most {fit} of these buildings fit; send at most          {fit} a request, or leave include_chips out"
    )]
    ChipsTooLarge {
        buildings: usize,
        size: usize,
        fit: usize,
        limit: usize,
    },
    /// Our own fault: a bug or a broken dependency, never the caller's input.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RequestError {
    /// The snake_case code used in JSON error bodies (`{"error": {"code", "message"}}`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_request",
            Self::TooManyBuildings { .. } => "too_many_buildings",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::ResponseTooLarge { .. } | Self::ChipsTooLarge { .. } => "response_too_large",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The Lambda `errorType` for direct invokes: a readable name, not a Rust type path.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "InvalidRequest",
            Self::TooManyBuildings { .. } => "TooManyBuildings",
            Self::PayloadTooLarge { .. } => "PayloadTooLarge",
            Self::ResponseTooLarge { .. } | Self::ChipsTooLarge { .. } => "ResponseTooLarge",
            Self::Internal(_) => "InternalError",
        }
    }

    /// The HTTP status for API Gateway callers.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::TooManyBuildings { .. }
            | Self::PayloadTooLarge { .. }
            | Self::ResponseTooLarge { .. }
            | Self::ChipsTooLarge { .. } => 413,
            Self::Internal(_) => 500,
        }
    }

    /// `{"error": {"code": ..., "message": ...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

/// A configuration value that cannot be used, with the variable, the value and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(name: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Why the function could not start. Reported to Lambda's `/runtime/init/error` (and printed
/// by local commands) as `errorType` + message; each variant names the setting or the file to
/// look at.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartupError {
    /// An environment variable is missing or unusable.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// The ONNX Runtime library cannot be found or loaded.
    #[error("{0}")]
    OnnxRuntime(String),
    /// The imagery source cannot be set up (e.g. the HTTP client).
    #[error("{0}")]
    Imagery(String),
    /// The model file cannot be fetched (S3 or disk).
    #[error("{0}")]
    ModelLoad(String),
    /// The model was fetched but cannot be used (not ONNX, wrong shapes, labels that do not fit).
    #[error("{0}")]
    Model(String),
    /// The register file cannot be fetched.
    #[error("{0}")]
    RegistryLoad(String),
    /// The register was fetched but is not a usable register.
    #[error("{0}")]
    Registry(String),
}

impl StartupError {
    /// The readable `errorType` Lambda shows for a failed init.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Config(_) => "ConfigError",
            Self::OnnxRuntime(_) => "OnnxRuntimeError",
            Self::Imagery(_) => "ImageryError",
            Self::ModelLoad(_) => "ModelLoadError",
            Self::Model(_) => "ModelError",
            Self::RegistryLoad(_) => "RegistryLoadError",
            Self::Registry(_) => "RegistryError",
        }
    }
}

impl From<StartupError> for lambda_runtime::Diagnostic {
    fn from(error: StartupError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

impl From<RequestError> for lambda_runtime::Diagnostic {
    fn from(error: RequestError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}
