//! The model's settings, and one parser for them wherever they are written: in the environment
//! (`OUTPUT_KIND=sigmoid`) or in the model file's metadata (`output_kind = sigmoid`). The
//! environment overrides the file, the file overrides what the model's shape and graph imply,
//! and each applied value remembers where it came from ([`Source`]), so the answer and
//! `bootstrap inspect` can say it.
//!
//! One parser means a value the metadata tool accepts is a value init accepts, and an error
//! names the variable to set whichever side was wrong.

use serde::Serialize;

/// The settings a model may carry in its `metadata_props`, and their variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    Labels,
    Output,
    OutputKind,
    PositiveThreshold,
    InputLayout,
    InputChannels,
    InputRange,
    InputMean,
    InputStd,
    ChipSize,
}

impl Key {
    pub const ALL: [Key; 10] = [
        Key::Labels,
        Key::Output,
        Key::OutputKind,
        Key::PositiveThreshold,
        Key::InputLayout,
        Key::InputChannels,
        Key::InputRange,
        Key::InputMean,
        Key::InputStd,
        Key::ChipSize,
    ];

    /// The environment variable.
    pub fn env(self) -> &'static str {
        match self {
            Key::Labels => "MODEL_LABELS",
            Key::Output => "MODEL_OUTPUT",
            Key::OutputKind => "OUTPUT_KIND",
            Key::PositiveThreshold => "POSITIVE_THRESHOLD",
            Key::InputLayout => "INPUT_LAYOUT",
            Key::InputChannels => "INPUT_CHANNELS",
            Key::InputRange => "INPUT_RANGE",
            Key::InputMean => "INPUT_MEAN",
            Key::InputStd => "INPUT_STD",
            Key::ChipSize => "CHIP_SIZE",
        }
    }

    /// The `metadata_props` key, also the name the answer's `sources` use.
    pub fn metadata(self) -> &'static str {
        match self {
            Key::Labels => "labels",
            Key::Output => "output",
            Key::OutputKind => "output_kind",
            Key::PositiveThreshold => "positive_threshold",
            Key::InputLayout => "input_layout",
            Key::InputChannels => "input_channels",
            Key::InputRange => "input_range",
            Key::InputMean => "input_mean",
            Key::InputStd => "input_std",
            Key::ChipSize => "chip_size",
        }
    }

    /// The key named `name` in the metadata.
    pub fn from_metadata(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.metadata() == name)
    }
}

/// Where an applied value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The environment variable.
    Env,
    /// The model file's `metadata_props`.
    Metadata,
    /// The operator that produced the output (`OUTPUT_KIND=auto`).
    Graph,
    /// The model's declared input or output shape.
    Shape,
    /// The documented default.
    Default,
}

/// How to read the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Raw scores of exclusive classes: softmax over C; with C = 1, the sigmoid of the one logit.
    Logits,
    /// Exclusive classes' probabilities, already summing to 1 (the graph ends in `Softmax`).
    Probabilities,
    /// Already through a sigmoid: C = 1 is binary, C > 1 independent labels.
    Sigmoid,
    /// Raw scores of independent labels: a sigmoid per label (C = 1 is binary).
    Multilabel,
}

/// Where the channel dimension is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N,3,H,W]`: PyTorch, most ONNX exports.
    Nchw,
    /// `[N,H,W,3]`: Keras/TensorFlow.
    Nhwc,
}

/// The order of the three colour channels the model was trained on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channels {
    Rgb,
    /// OpenCV pipelines (`cv2.imread`), Caffe-style Keras models.
    Bgr,
}

/// The scale of the pixel values before `INPUT_MEAN`/`INPUT_STD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelRange {
    /// 0–1 (torchvision's `ToTensor`).
    Unit,
    /// 0–255 (Caffe, many Keras models).
    Byte,
}

/// `CHIP_SIZE` bounds, in the environment and in the metadata alike.
pub const CHIP_SIZE_RANGE: std::ops::RangeInclusive<u32> = 8..=2048;

/// The settings given in one place (the environment, or one model's metadata); `None` where
/// that place says nothing. `output_kind` is `None` for `auto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelSettings {
    pub labels: Option<Vec<String>>,
    pub output: Option<String>,
    pub output_kind: Option<OutputKind>,
    pub positive_threshold: Option<f32>,
    pub input_layout: Option<Layout>,
    pub input_channels: Option<Channels>,
    pub input_range: Option<PixelRange>,
    pub input_mean: Option<[f32; 3]>,
    pub input_std: Option<[f32; 3]>,
    pub chip_size: Option<u32>,
}

/// A value that is not a valid setting.
#[derive(Debug, Clone, PartialEq)]
pub struct SettingError {
    pub key: Key,
    pub value: String,
    pub reason: String,
}

impl ModelSettings {
    /// Reads every key from `get` (`None` or blank = not given), checking each value.
    pub fn parse(get: impl Fn(Key) -> Option<String>) -> Result<Self, SettingError> {
        let mut s = ModelSettings::default();
        for key in Key::ALL {
            let Some(raw) = get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
            else {
                continue;
            };
            let fail = |reason: &str| SettingError {
                key,
                value: raw.clone(),
                reason: reason.to_string(),
            };
            match key {
                Key::Labels => s.labels = Some(labels(&raw).map_err(|r| fail(&r))?),
                Key::Output => s.output = Some(raw.clone()),
                Key::OutputKind => {
                    s.output_kind = one_of(
                        &raw,
                        &[
                            ("auto", None),
                            ("logits", Some(OutputKind::Logits)),
                            ("probabilities", Some(OutputKind::Probabilities)),
                            ("sigmoid", Some(OutputKind::Sigmoid)),
                            ("multilabel", Some(OutputKind::Multilabel)),
                        ],
                    )
                    .ok_or_else(|| {
                        fail("expected auto, logits, probabilities, sigmoid or multilabel")
                    })?;
                }
                Key::PositiveThreshold => {
                    let t: f32 = raw.parse().map_err(|_| fail("not a number"))?;
                    if !(0.0..=1.0).contains(&t) {
                        return Err(fail("must be between 0 and 1 (a probability)"));
                    }
                    s.positive_threshold = Some(t);
                }
                Key::InputLayout => {
                    s.input_layout = Some(
                        one_of(&raw, &[("nchw", Layout::Nchw), ("nhwc", Layout::Nhwc)])
                            .ok_or_else(|| fail("expected nchw ([N,3,H,W]) or nhwc ([N,H,W,3])"))?,
                    );
                }
                Key::InputChannels => {
                    s.input_channels = Some(
                        one_of(&raw, &[("rgb", Channels::Rgb), ("bgr", Channels::Bgr)])
                            .ok_or_else(|| fail("expected rgb or bgr"))?,
                    );
                }
                Key::InputRange => {
                    s.input_range = Some(
                        one_of(
                            &raw,
                            &[("unit", PixelRange::Unit), ("byte", PixelRange::Byte)],
                        )
                        .ok_or_else(|| fail("expected unit (pixels 0–1) or byte (0–255)"))?,
                    );
                }
                Key::InputMean => s.input_mean = Some(triple(&raw).map_err(|r| fail(&r))?),
                Key::InputStd => {
                    let std = triple(&raw).map_err(|r| fail(&r))?;
                    if std.iter().any(|v| *v <= 0.0) {
                        return Err(fail("every standard deviation must be > 0"));
                    }
                    s.input_std = Some(std);
                }
                Key::ChipSize => {
                    let size: u32 = raw.parse().map_err(|_| fail("not a whole number"))?;
                    if !CHIP_SIZE_RANGE.contains(&size) {
                        return Err(fail("must be in 8..=2048"));
                    }
                    s.chip_size = Some(size);
                }
            }
        }
        Ok(s)
    }

    /// The settings in a model's metadata (`graph.metadata`); other keys are ignored.
    pub fn from_metadata(metadata: &[(String, String)]) -> Result<Self, SettingError> {
        Self::parse(|key| {
            metadata
                .iter()
                .rev()
                .find(|(k, _)| k == key.metadata())
                .map(|(_, v)| v.clone())
        })
    }
}

/// The environment's value if given, else the metadata's, with where it came from.
pub fn pick<T: Clone>(env: &Option<T>, metadata: &Option<T>) -> Option<(T, Source)> {
    env.clone()
        .map(|v| (v, Source::Env))
        .or_else(|| metadata.clone().map(|v| (v, Source::Metadata)))
}

fn one_of<T: Copy>(raw: &str, choices: &[(&str, T)]) -> Option<T> {
    choices
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(raw))
        .map(|(_, v)| *v)
}

/// Comma-separated names, or a JSON array of strings (for names holding commas).
fn labels(raw: &str) -> Result<Vec<String>, String> {
    let labels: Vec<String> = if raw.starts_with('[') {
        serde_json::from_str(raw).map_err(|_| "not a JSON array of strings".to_string())?
    } else {
        raw.split(',').map(|l| l.trim().to_string()).collect()
    };
    if labels.iter().any(|l| l.trim().is_empty()) {
        return Err("empty label: expected comma-separated names like other,asbestos".into());
    }
    Ok(labels)
}

/// One value for all channels, or three (in the model's channel order); brackets allowed.
fn triple(raw: &str) -> Result<[f32; 3], String> {
    let inner = raw.trim().trim_start_matches('[').trim_end_matches(']');
    let values: Result<Vec<f32>, _> = inner.split(',').map(|v| v.trim().parse::<f32>()).collect();
    match values {
        Ok(v) if v.iter().all(|x| x.is_finite()) && v.len() == 1 => Ok([v[0]; 3]),
        Ok(v) if v.iter().all(|x| x.is_finite()) && v.len() == 3 => Ok([v[0], v[1], v[2]]),
        _ => Err(
            "expected one number or three comma-separated numbers in the model's channel \
             order, e.g. 0.485,0.456,0.406"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<ModelSettings, SettingError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        ModelSettings::parse(|k| map.get(k.env()).map(|v| v.to_string()))
    }

    #[test]
    fn nothing_given_is_all_none() {
        assert_eq!(parse(&[]).unwrap(), ModelSettings::default());
        assert_eq!(
            parse(&[("OUTPUT_KIND", "  ")]).unwrap(),
            ModelSettings::default()
        );
    }

    #[test]
    fn every_setting_parses_its_documented_forms() {
        let s = parse(&[
            ("MODEL_LABELS", "other, asbestos"),
            ("MODEL_OUTPUT", "prob"),
            ("OUTPUT_KIND", "Sigmoid"),
            ("POSITIVE_THRESHOLD", "0.35"),
            ("INPUT_LAYOUT", "nhwc"),
            ("INPUT_CHANNELS", "BGR"),
            ("INPUT_RANGE", "byte"),
            ("INPUT_MEAN", "[103.939, 116.779, 123.68]"),
            ("INPUT_STD", "58"),
            ("CHIP_SIZE", "96"),
        ])
        .unwrap();
        assert_eq!(s.labels, Some(vec!["other".into(), "asbestos".into()]));
        assert_eq!(s.output.as_deref(), Some("prob"));
        assert_eq!(s.output_kind, Some(OutputKind::Sigmoid));
        assert_eq!(s.positive_threshold, Some(0.35));
        assert_eq!(s.input_layout, Some(Layout::Nhwc));
        assert_eq!(s.input_channels, Some(Channels::Bgr));
        assert_eq!(s.input_range, Some(PixelRange::Byte));
        assert_eq!(s.input_mean, Some([103.939, 116.779, 123.68]));
        assert_eq!(s.input_std, Some([58.0; 3]));
        assert_eq!(s.chip_size, Some(96));
        assert_eq!(parse(&[("OUTPUT_KIND", "auto")]).unwrap().output_kind, None);
        assert_eq!(
            parse(&[("MODEL_LABELS", r#"["a, b", "c"]"#)])
                .unwrap()
                .labels,
            Some(vec!["a, b".into(), "c".into()])
        );
    }

    #[test]
    fn bad_values_name_their_key_and_the_accepted_forms() {
        for (name, value, says) in [
            ("POSITIVE_THRESHOLD", "1.5", "between 0 and 1"),
            ("POSITIVE_THRESHOLD", "-0.1", "between 0 and 1"),
            ("POSITIVE_THRESHOLD", "half", "not a number"),
            ("OUTPUT_KIND", "softmax", "logits, probabilities"),
            ("INPUT_LAYOUT", "chw", "nchw"),
            ("INPUT_CHANNELS", "rgba", "rgb or bgr"),
            ("INPUT_RANGE", "255", "unit"),
            ("INPUT_MEAN", "1,2", "three"),
            ("INPUT_STD", "0.5,0,1", "> 0"),
            ("MODEL_LABELS", "a,,b", "empty label"),
            ("CHIP_SIZE", "4", "8..=2048"),
        ] {
            let err = parse(&[(name, value)]).unwrap_err();
            assert_eq!(err.key.env(), name);
            assert_eq!(err.value, value);
            assert!(err.reason.contains(says), "{name}={value}: {}", err.reason);
        }
    }

    #[test]
    fn metadata_uses_its_own_key_names_and_the_last_repeat() {
        let metadata = vec![
            ("labels".to_string(), "a,b".to_string()),
            ("labels".to_string(), "c,d".to_string()),
            ("input_range".to_string(), "byte".to_string()),
            ("author".to_string(), "someone".to_string()),
            ("INPUT_CHANNELS".to_string(), "bgr".to_string()),
        ];
        let s = ModelSettings::from_metadata(&metadata).unwrap();
        assert_eq!(s.labels, Some(vec!["c".into(), "d".into()]));
        assert_eq!(s.input_range, Some(PixelRange::Byte));
        assert_eq!(
            s.input_channels, None,
            "variable names are not metadata keys"
        );
    }

    #[test]
    fn the_environment_wins_over_the_metadata() {
        assert_eq!(pick(&Some(1), &Some(2)), Some((1, Source::Env)));
        assert_eq!(pick(&None, &Some(2)), Some((2, Source::Metadata)));
        assert_eq!(pick::<u8>(&None, &None), None);
    }
}
