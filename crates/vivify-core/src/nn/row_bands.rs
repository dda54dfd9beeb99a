//! Per-frame layers over horizontal bands of rows, for images too large to convolve at once:
//! candle's convolutions build an im2col buffer of 9 x C_in values per output pixel and the
//! GroupNorms make f32 copies of their whole input, so at full VAE resolution those
//! temporaries, not the activations, set the peak. Banded, they are bounded by the band.
//!
//! The result is the unbanded one (up to float summation order): GroupNorm statistics are
//! taken over the whole frame first (`GroupNorm::stats_in_row_bands`) and applied per band, and
//! each 3x3 convolution reads one halo row above and below its band, with zero padding only
//! at the frame's true borders. No blending is needed, because nothing is approximated.

use super::conv::{Conv2d, convolve};
use candle_core::{Result, Tensor};

/// A stride-1, padding-1 3x3 `conv` of `pre(x)` computed `band` output rows at a time; `pre`
/// is a pointwise function (a normalisation with whole-frame statistics, SiLU) applied to each
/// band with its halo rows, before the zero padding, as the unbanded layer applies it.
pub fn conv3x3_in_row_bands(
    conv: &Conv2d,
    x: &Tensor,
    band: usize,
    pre: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let h = x.dim(2)?;
    let band = band.clamp(1, h.max(1));
    let mut parts = Vec::with_capacity(h.div_ceil(band));
    for start in (0..h).step_by(band) {
        let end = (start + band).min(h);
        let (lo, hi) = (start.saturating_sub(1), (end + 1).min(h));
        let rows = pre(&x.narrow(2, lo, hi - lo)?)?;
        let top = usize::from(start == 0);
        let bottom = usize::from(end == h);
        let padded = rows
            .pad_with_zeros(2, top, bottom)?
            .pad_with_zeros(3, 1, 1)?;
        let mut out = convolve(&padded, conv.weight(), 1, 0)?;
        if let Some(b) = conv.bias() {
            out = out.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        }
        parts.push(out);
    }
    Tensor::cat(&parts, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Module};
    use candle_nn::{VarBuilder, VarMap};

    #[test]
    fn banded_convolution_matches_the_whole_one() {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let conv = crate::nn::conv::conv2d(
            3,
            5,
            3,
            candle_nn::Conv2dConfig {
                padding: 1,
                ..Default::default()
            },
            vb,
        )
        .unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 11, 7), &dev).unwrap();
        let whole = conv.forward(&x.silu().unwrap()).unwrap();
        for band in [1, 3, 4, 11, 20] {
            let banded = conv3x3_in_row_bands(&conv, &x, band, |t| t.silu()).unwrap();
            let diff = (&banded - &whole)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "band {band}: {diff}");
        }
    }
}
