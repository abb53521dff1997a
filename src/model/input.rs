//! What the model takes, and chips → its input tensor.
//!
//! The layout comes from the declared shape (`[N,3,H,W]` or `[N,H,W,3]`; `INPUT_LAYOUT` where
//! the shape cannot tell), the element type from the model (float32, float16, or uint8, which
//! is fed the raw 0–255 pixels), the rest from the settings: channel order (`INPUT_CHANNELS`),
//! pixel scale (`INPUT_RANGE`: 0–1 or 0–255) and `INPUT_MEAN`/`INPUT_STD`, applied as
//! `(pixel · scale − mean) / std` per channel, in the model's channel order. A chip is written
//! straight into its slot of the batch tensor, so no intermediate image is made.

use half::f16;
use image::RgbImage;
use ndarray::Array4;
use ort::value::TensorElementType;
use serde::Serialize;

use super::settings::{Channels, Key, Layout, ModelSettings, PixelRange, Source, pick};

/// The input's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Element {
    Float32,
    Float16,
    /// Raw 0–255 pixels: the model normalises them itself.
    Uint8,
}

/// The model's input as ONNX Runtime declares it (`-1` for a dynamic dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub name: String,
    pub element: TensorElementType,
    pub shape: Vec<i64>,
}

/// How chips become this model's input, with where each choice came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// The declared shape (`-1` dynamic).
    pub shape: Vec<i64>,
    pub layout: Layout,
    pub element: Element,
    pub channels: Channels,
    pub range: PixelRange,
    /// In the model's channel order.
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub height: usize,
    pub width: usize,
    /// A fixed batch dimension, if the model has one.
    pub fixed_batch: Option<usize>,
    /// The chip side in pixels at `TILE_ZOOM` (resized to `width × height` when different).
    pub chip_size: u32,
    /// Where `input_layout`, `input_channels`, `input_range`, `input_mean`, `input_std` and
    /// `chip_size` came from.
    pub sources: Vec<(Key, Source)>,
}

/// One batch in the model's layout and element type. Rows past the chips (a fixed batch
/// dimension's padding) are zeros.
#[derive(Debug, Clone, PartialEq)]
pub enum InputBatch {
    Float32(Array4<f32>),
    Float16(Array4<f16>),
    Uint8(Array4<u8>),
}

impl InputBatch {
    /// Rows in the tensor (the batch dimension).
    pub fn rows(&self) -> usize {
        match self {
            Self::Float32(a) => a.shape()[0],
            Self::Float16(a) => a.shape()[0],
            Self::Uint8(a) => a.shape()[0],
        }
    }
}

/// `[N,3,224,224]`, with `?` for dynamic dimensions.
pub fn shown(shape: &[i64]) -> String {
    let parts: Vec<String> = shape
        .iter()
        .enumerate()
        .map(|(i, v)| match (i, *v) {
            (0, d) if d < 0 => "N".to_string(),
            (_, d) if d < 0 => "?".to_string(),
            (_, d) => d.to_string(),
        })
        .collect();
    format!("[{}]", parts.join(","))
}

/// A readable element type name.
pub fn type_name(ty: TensorElementType) -> String {
    match ty {
        TensorElementType::Float32 => "float32".into(),
        TensorElementType::Float16 => "float16".into(),
        TensorElementType::Float64 => "float64".into(),
        TensorElementType::Uint8 => "uint8".into(),
        TensorElementType::Int8 => "int8".into(),
        TensorElementType::Int64 => "int64".into(),
        TensorElementType::Int32 => "int32".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

impl InputSpec {
    /// What to feed `declared`, from the environment's settings (`env`, winning) and the
    /// model's metadata (`metadata`). `env.chip_size` is `CHIP_SIZE`. An input this function
    /// cannot feed is an error naming the shape and the fix.
    pub fn resolve(
        declared: &Declared,
        env: &ModelSettings,
        metadata: &ModelSettings,
    ) -> Result<Self, String> {
        let shape = &declared.shape;
        let what = format!("model input {:?} {}", declared.name, shown(shape));
        if shape.len() != 4 {
            return Err(format!(
                "{what} is not an image batch: tilepredict feeds [N,3,H,W] (NCHW, PyTorch) or \
                 [N,H,W,3] (NHWC, Keras/TensorFlow); export the model with such an input"
            ));
        }
        let element = match declared.element {
            TensorElementType::Float32 => Element::Float32,
            TensorElementType::Float16 => Element::Float16,
            TensorElementType::Uint8 => Element::Uint8,
            other => {
                return Err(format!(
                    "{what} is {}: tilepredict feeds float32, float16 or uint8 images; export \
                     the model with one of those input types",
                    type_name(other)
                ));
            }
        };
        let (layout, layout_source) = layout(
            shape,
            pick(&env.input_layout, &metadata.input_layout),
            &what,
        )?;
        let (h, w) = match layout {
            Layout::Nchw => (shape[2], shape[3]),
            Layout::Nhwc => (shape[1], shape[2]),
        };
        let chip = pick(&env.chip_size, &metadata.chip_size);
        let spatial = |d: i64| -> Result<usize, String> {
            match (d, &chip) {
                (d, _) if d > 0 => Ok(d as usize),
                (_, Some((size, _))) => Ok(*size as usize),
                _ => Err(format!(
                    "{what} has a dynamic height or width: set CHIP_SIZE to the size to feed \
                     (the size the model was trained on)"
                )),
            }
        };
        let (height, width) = (spatial(h)?, spatial(w)?);
        let (chip_size, chip_source) = chip.unwrap_or((width.max(height) as u32, Source::Shape));

        let (channels, channels_source) = pick(&env.input_channels, &metadata.input_channels)
            .unwrap_or((Channels::Rgb, Source::Default));
        let range = pick(&env.input_range, &metadata.input_range);
        let mean = pick(&env.input_mean, &metadata.input_mean);
        let std = pick(&env.input_std, &metadata.input_std);
        let (range, mean, std) = if element == Element::Uint8 {
            let given = [
                (Key::InputRange, range.map(|r| r.1)),
                (Key::InputMean, mean.map(|m| m.1)),
                (Key::InputStd, std.map(|s| s.1)),
            ];
            if let Some((key, source)) = given.iter().find_map(|(k, s)| s.map(|s| (*k, s))) {
                return Err(format!(
                    "{what} is uint8: the model takes the raw 0–255 pixels and normalises them \
                     itself, so {} cannot apply: {}",
                    key.env(),
                    match source {
                        Source::Env => format!("unset {}", key.env()),
                        _ => format!(
                            "remove it from the model's metadata (bootstrap metadata MODEL OUT {}=)",
                            key.metadata()
                        ),
                    }
                ));
            }
            (
                (PixelRange::Byte, Source::Shape),
                ([0.0; 3], Source::Shape),
                ([1.0; 3], Source::Shape),
            )
        } else {
            (
                range.unwrap_or((PixelRange::Unit, Source::Default)),
                mean.unwrap_or(([0.0; 3], Source::Default)),
                std.unwrap_or(([1.0; 3], Source::Default)),
            )
        };
        Ok(Self {
            name: declared.name.clone(),
            shape: shape.clone(),
            layout,
            element,
            channels,
            range: range.0,
            mean: mean.0,
            std: std.0,
            height,
            width,
            fixed_batch: (shape[0] > 0).then_some(shape[0] as usize),
            chip_size,
            sources: vec![
                (Key::InputLayout, layout_source),
                (Key::InputChannels, channels_source),
                (Key::InputRange, range.1),
                (Key::InputMean, mean.1),
                (Key::InputStd, std.1),
                (Key::ChipSize, chip_source),
            ],
        })
    }

    /// The tensor for `chips` (each `width × height`): one row per chip, zero rows up to a
    /// fixed batch dimension.
    ///
    /// # Panics
    /// If a chip has another size, or there are more chips than a fixed batch holds (caller
    /// bugs: the assembly fits every chip to the input, the batcher sizes batches).
    pub fn batch(&self, chips: &[&RgbImage]) -> InputBatch {
        let rows = self.fixed_batch.unwrap_or(chips.len());
        assert!(
            chips.len() <= rows,
            "more chips than the model's fixed batch"
        );
        let (scale, offset) = self.affine();
        match self.element {
            Element::Float32 => InputBatch::Float32(
                self.fill(chips, rows, |b, c| f32::from(b) * scale[c] + offset[c]),
            ),
            Element::Float16 => InputBatch::Float16(self.fill(chips, rows, |b, c| {
                f16::from_f32(f32::from(b) * scale[c] + offset[c])
            })),
            Element::Uint8 => InputBatch::Uint8(self.fill(chips, rows, |b, _| b)),
        }
    }

    /// Per model channel: `value = byte · scale + offset` = `(byte · range − mean) / std`.
    fn affine(&self) -> ([f32; 3], [f32; 3]) {
        let unit = match self.range {
            PixelRange::Unit => 1.0 / 255.0,
            PixelRange::Byte => 1.0,
        };
        let mut scale = [0.0; 3];
        let mut offset = [0.0; 3];
        for c in 0..3 {
            scale[c] = unit / self.std[c];
            offset[c] = -self.mean[c] / self.std[c];
        }
        (scale, offset)
    }

    /// Writes each chip into its row; `value(byte, model_channel)`.
    fn fill<T: Clone + Default>(
        &self,
        chips: &[&RgbImage],
        rows: usize,
        value: impl Fn(u8, usize) -> T,
    ) -> Array4<T> {
        let (h, w) = (self.height, self.width);
        let plane = h * w;
        let mut tensor = match self.layout {
            Layout::Nchw => Array4::<T>::default((rows, 3, h, w)),
            Layout::Nhwc => Array4::<T>::default((rows, h, w, 3)),
        };
        // Model channel k reads pixel channel source[k].
        let source = match self.channels {
            Channels::Rgb => [0, 1, 2],
            Channels::Bgr => [2, 1, 0],
        };
        let data = tensor.as_slice_mut().expect("a fresh array is contiguous");
        for (slot, chip) in data.chunks_exact_mut(3 * plane).zip(chips) {
            assert_eq!(
                (chip.width() as usize, chip.height() as usize),
                (w, h),
                "the chip does not match the model's input"
            );
            let pixels = chip.as_raw().chunks_exact(3).enumerate();
            match self.layout {
                Layout::Nchw => {
                    for (i, px) in pixels {
                        for (k, &from) in source.iter().enumerate() {
                            slot[k * plane + i] = value(px[from], k);
                        }
                    }
                }
                Layout::Nhwc => {
                    for (i, px) in pixels {
                        for (k, &from) in source.iter().enumerate() {
                            slot[3 * i + k] = value(px[from], k);
                        }
                    }
                }
            }
        }
        tensor
    }
}

/// The layout from the shape and `INPUT_LAYOUT`/`input_layout`: a dimension of exactly 3 where
/// the other layout's channel dimension is not 3 decides; a given layout must fit the shape.
fn layout(
    shape: &[i64],
    given: Option<(Layout, Source)>,
    what: &str,
) -> Result<(Layout, Source), String> {
    let (first, last) = (shape[1], shape[3]);
    let fits = |d: i64| d == 3 || d < 0;
    if let Some((layout, source)) = given {
        let (dim, position) = match layout {
            Layout::Nchw => (first, "second"),
            Layout::Nhwc => (last, "last"),
        };
        if !fits(dim) {
            let name = match source {
                Source::Env => "INPUT_LAYOUT",
                _ => "the model's input_layout metadata",
            };
            return Err(format!(
                "{what}: {name} says {}, but its {position} dimension (channels in that layout) \
                 is {dim}, not 3",
                serde_json::to_value(layout)
                    .expect("a layout serialises")
                    .as_str()
                    .unwrap_or("")
            ));
        }
        return Ok((layout, source));
    }
    match (fits(first), fits(last)) {
        (true, false) => Ok((Layout::Nchw, Source::Shape)),
        (false, true) => Ok((Layout::Nhwc, Source::Shape)),
        (true, true) if first == 3 && last != 3 => Ok((Layout::Nchw, Source::Shape)),
        (true, true) if last == 3 && first != 3 => Ok((Layout::Nhwc, Source::Shape)),
        (true, true) => Err(format!(
            "{what}: the shape does not say where the channels are: set INPUT_LAYOUT=nchw \
             ([N,3,H,W], PyTorch) or INPUT_LAYOUT=nhwc ([N,H,W,3], Keras/TensorFlow)"
        )),
        (false, false) => Err(format!(
            "{what} has no dimension of 3 channels (second for NCHW, last for NHWC): \
             tilepredict feeds 3-channel RGB or BGR images; a {}-channel model needs another \
             input",
            if first > 0 && first < last {
                first
            } else {
                last
            }
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn declared(shape: &[i64], element: TensorElementType) -> Declared {
        Declared {
            name: "image".into(),
            element,
            shape: shape.to_vec(),
        }
    }

    fn spec(shape: &[i64], element: TensorElementType, env: ModelSettings) -> InputSpec {
        InputSpec::resolve(&declared(shape, element), &env, &ModelSettings::default()).unwrap()
    }

    fn floats(batch: &InputBatch) -> Vec<f32> {
        match batch {
            InputBatch::Float32(a) => a.iter().copied().collect(),
            InputBatch::Float16(a) => a.iter().map(|v| v.to_f32()).collect(),
            InputBatch::Uint8(a) => a.iter().map(|v| f32::from(*v)).collect(),
        }
    }

    /// Two pixels: (255, 0, 51) and (0, 255, 102).
    fn chip() -> RgbImage {
        RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([255, 0, 51])
            } else {
                Rgb([0, 255, 102])
            }
        })
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-3, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn nchw_float32_is_planes_scaled_to_unit_range() {
        let s = spec(
            &[-1, 3, 1, 2],
            TensorElementType::Float32,
            ModelSettings::default(),
        );
        assert_eq!(
            (s.layout, s.element, s.fixed_batch),
            (Layout::Nchw, Element::Float32, None)
        );
        close(
            &floats(&s.batch(&[&chip()])),
            &[1.0, 0.0, 0.0, 1.0, 0.2, 0.4],
        );
    }

    #[test]
    fn nhwc_interleaves_and_bgr_swaps_and_byte_range_keeps_0_to_255() {
        let env = ModelSettings {
            input_channels: Some(Channels::Bgr),
            input_range: Some(PixelRange::Byte),
            input_mean: Some([1.0, 2.0, 3.0]),
            input_std: Some([2.0, 1.0, 1.0]),
            ..Default::default()
        };
        let s = spec(&[-1, 1, 2, 3], TensorElementType::Float32, env);
        assert_eq!(s.layout, Layout::Nhwc);
        // Pixel 0 in B,G,R order = (51, 0, 255), then (102, 255, 0); minus mean, over std.
        close(
            &floats(&s.batch(&[&chip()])),
            &[25.0, -2.0, 252.0, 50.5, 253.0, -3.0],
        );
    }

    #[test]
    fn float16_and_uint8_inputs() {
        let s = spec(
            &[-1, 3, 1, 2],
            TensorElementType::Float16,
            ModelSettings::default(),
        );
        let batch = s.batch(&[&chip()]);
        assert!(matches!(batch, InputBatch::Float16(_)));
        close(&floats(&batch), &[1.0, 0.0, 0.0, 1.0, 0.2, 0.4]);
        let s = spec(
            &[-1, 1, 2, 3],
            TensorElementType::Uint8,
            ModelSettings::default(),
        );
        let batch = s.batch(&[&chip()]);
        assert!(matches!(batch, InputBatch::Uint8(_)));
        close(&floats(&batch), &[255.0, 0.0, 51.0, 0.0, 255.0, 102.0]);
    }

    #[test]
    fn a_fixed_batch_is_padded_with_zero_rows() {
        let s = spec(
            &[4, 3, 1, 2],
            TensorElementType::Float32,
            ModelSettings::default(),
        );
        let batch = s.batch(&[&chip()]);
        assert_eq!(batch.rows(), 4);
        assert!(floats(&batch)[6..].iter().all(|v| *v == 0.0));
    }

    #[test]
    fn layout_comes_from_the_shape_or_the_setting() {
        let nchw = ModelSettings {
            input_layout: Some(Layout::Nchw),
            ..Default::default()
        };
        let f32t = TensorElementType::Float32;
        assert_eq!(
            spec(
                &[-1, 3, -1, -1],
                f32t,
                ModelSettings {
                    chip_size: Some(8),
                    ..Default::default()
                }
            )
            .layout,
            Layout::Nchw
        );
        assert_eq!(
            spec(&[-1, -1, 224, 224], f32t, ModelSettings::default()).layout,
            Layout::Nchw
        );
        assert_eq!(
            spec(&[-1, 3, 3, 3], f32t, nchw.clone()).sources[0],
            (Key::InputLayout, Source::Env)
        );
        let err = InputSpec::resolve(
            &declared(&[-1, 3, 3, 3], f32t),
            &ModelSettings::default(),
            &ModelSettings::default(),
        )
        .unwrap_err();
        assert!(err.contains("set INPUT_LAYOUT=nchw"), "{err}");
        let err = InputSpec::resolve(
            &declared(&[-1, 224, 224, 3], f32t),
            &nchw,
            &ModelSettings::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("INPUT_LAYOUT says nchw") && err.contains("is 224, not 3"),
            "{err}"
        );
    }

    #[test]
    fn inputs_it_cannot_feed_say_why_and_what_to_set() {
        let none = ModelSettings::default();
        let resolve =
            |shape: &[i64], ty| InputSpec::resolve(&declared(shape, ty), &none, &none).unwrap_err();
        let err = resolve(&[-1, 784], TensorElementType::Float32);
        assert!(err.contains("[N,784] is not an image batch"), "{err}");
        let err = resolve(&[-1, 1, 32, 32], TensorElementType::Float32);
        assert!(err.contains("no dimension of 3 channels"), "{err}");
        let err = resolve(&[-1, 3, -1, -1], TensorElementType::Float32);
        assert!(err.contains("set CHIP_SIZE"), "{err}");
        let err = resolve(&[-1, 3, 8, 8], TensorElementType::Int64);
        assert!(err.contains("is int64"), "{err}");
        let mean = ModelSettings {
            input_mean: Some([0.5; 3]),
            ..Default::default()
        };
        let err = InputSpec::resolve(
            &declared(&[-1, 3, 8, 8], TensorElementType::Uint8),
            &none,
            &mean,
        )
        .unwrap_err();
        assert!(
            err.contains("INPUT_MEAN cannot apply") && err.contains("input_mean="),
            "{err}"
        );
    }

    #[test]
    fn chip_size_comes_from_the_environment_then_the_metadata_then_the_shape() {
        let f32t = TensorElementType::Float32;
        let meta = ModelSettings {
            chip_size: Some(96),
            ..Default::default()
        };
        let env = ModelSettings {
            chip_size: Some(80),
            ..Default::default()
        };
        let d = declared(&[-1, 3, 64, 64], f32t);
        let none = ModelSettings::default();
        assert_eq!(InputSpec::resolve(&d, &none, &none).unwrap().chip_size, 64);
        assert_eq!(InputSpec::resolve(&d, &none, &meta).unwrap().chip_size, 96);
        assert_eq!(InputSpec::resolve(&d, &env, &meta).unwrap().chip_size, 80);
        let dynamic = InputSpec::resolve(&declared(&[-1, 3, -1, -1], f32t), &none, &meta).unwrap();
        assert_eq!((dynamic.height, dynamic.width), (96, 96));
    }
}
