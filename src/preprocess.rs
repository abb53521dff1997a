//! RGB8 chip → the model's input numbers: NCHW float32, pixels scaled to [0, 1], then
//! `(v - mean) / std` per channel. Written straight into the chip's slot of the batch tensor.

use image::RgbImage;

/// Per-channel affine map from a byte to the model's input value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    scale: [f32; 3],
    offset: [f32; 3],
}

impl Normalisation {
    /// `mean`/`std` as in torchvision: applied after dividing by 255.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        let mut scale = [0.0; 3];
        let mut offset = [0.0; 3];
        for c in 0..3 {
            scale[c] = 1.0 / (255.0 * std[c]);
            offset[c] = -mean[c] / std[c];
        }
        Self { scale, offset }
    }

    /// Writes `chip` as 3 planes (R, G, B) of `width × height` into `slot`.
    ///
    /// # Panics
    /// If `slot.len() != 3 · width · height` (a caller bug: slots are cut from the batch tensor).
    pub fn write(&self, chip: &RgbImage, slot: &mut [f32]) {
        let plane = chip.width() as usize * chip.height() as usize;
        assert_eq!(slot.len(), 3 * plane, "slot does not match the chip");
        let (r, rest) = slot.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (i, px) in chip.as_raw().chunks_exact(3).enumerate() {
            r[i] = f32::from(px[0]) * self.scale[0] + self.offset[0];
            g[i] = f32::from(px[1]) * self.scale[1] + self.offset[1];
            b[i] = f32::from(px[2]) * self.scale[2] + self.offset[2];
        }
    }
}

/// Numerically stable softmax (subtracts the maximum first).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn planes_are_rgb_and_scaled_to_unit_range() {
        let chip = RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([255, 0, 51])
            } else {
                Rgb([0, 255, 102])
            }
        });
        let mut slot = vec![9.0; 6];
        Normalisation::new([0.0; 3], [1.0; 3]).write(&chip, &mut slot);
        let expected = [1.0, 0.0, 0.0, 1.0, 0.2, 0.4];
        for (got, want) in slot.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{slot:?}");
        }
    }

    #[test]
    fn mean_and_std_are_applied_per_channel() {
        let chip = RgbImage::from_pixel(1, 1, Rgb([255, 255, 0]));
        let mut slot = vec![0.0; 3];
        Normalisation::new([0.5, 0.25, 0.5], [0.5, 0.25, 2.0]).write(&chip, &mut slot);
        let expected = [1.0, 3.0, -0.25];
        for (got, want) in slot.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{slot:?}");
        }
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let p = softmax(&[1000.0, 1000.0, -1000.0]);
        assert!((p[0] - 0.5).abs() < 1e-6 && (p[1] - 0.5).abs() < 1e-6 && p[2] == 0.0);
        let p = softmax(&[8.0, 0.0, 0.0]);
        let e8 = 8f32.exp();
        assert!((p[0] - e8 / (e8 + 2.0)).abs() < 1e-6);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
