//! Element-wise steps shared by the layers, through vivify's full-bandwidth CUDA kernels where
//! they apply (`cuda::elementwise`), else candle's ops with the same numbers as before.

use candle_core::{Result, Tensor};

/// a + b, same shapes.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = super::cuda::elementwise::add(a, b)? {
        return Ok(y);
    }
    a + b
}

/// (..., A, B) -> (..., B, A), contiguous: the channels-first <-> tokens layout changes.
pub fn transpose_last2(x: &Tensor) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(y) = super::cuda::elementwise::transpose_last2(x)? {
        return Ok(y);
    }
    let r = x.rank();
    x.transpose(r - 2, r - 1)?.contiguous()
}

/// (N, C, H, W) -> (N, H, W, C) through [`transpose_last2`]; a tensor that is already a
/// channels-last buffer seen as NCHW ([`channels_last_backed`]) comes back as that buffer, no copy.
pub fn to_channels_last(t: &Tensor) -> Result<Tensor> {
    if let Some(nhwc) = stored_channels_last(t)? {
        return Ok(nhwc);
    }
    let (n, c, h, w) = t.dims4()?;
    transpose_last2(&t.reshape((n, c, h * w))?)?.reshape((n, h, w, c))
}

/// t (N, C, H, W)'s own buffer read channels last, (N, H, W, C), where it is stored that way
/// ([`channels_last_backed`]); None where reading it so would need a copy.
pub fn stored_channels_last(t: &Tensor) -> Result<Option<Tensor>> {
    let nhwc = t.permute((0, 2, 3, 1))?;
    Ok(nhwc.is_contiguous().then_some(nhwc))
}

/// (N, H, W, C) -> (N, C, H, W), contiguous.
pub fn from_channels_last(y: &Tensor) -> Result<Tensor> {
    let (n, h, w, c) = y.dims4()?;
    transpose_last2(&y.reshape((n, h * w, c))?)?.reshape((n, c, h, w))
}

/// t (N, C, H, W) stored channels last: a channels-last copy, seen through a permutation with
/// t's dims and values. Convolution weights are kept this way where cuDNN reads them channels
/// last, so a call does not transpose them again.
pub fn channels_last_backed(t: &Tensor) -> Result<Tensor> {
    to_channels_last(t)?.permute((0, 3, 1, 2))
}

/// x (N, C, ...) plus a per-channel `bias` (C), plus a per-sample, per-channel `extra` (N, C),
/// plus a `residual` of x's shape: one pass on CUDA; on the CPU the additions run in that order.
pub fn add_per_channel(
    x: &Tensor,
    bias: Option<&Tensor>,
    extra: Option<&Tensor>,
    residual: Option<&Tensor>,
) -> Result<Tensor> {
    #[cfg(feature = "cuda")]
    if let Some(v) = per_channel_sum(bias, extra)?
        && let Some(y) = super::cuda::elementwise::channel_add(x, &v, residual)?
    {
        return Ok(y);
    }
    // (N, C) -> (N, C, 1, ...) to broadcast over the trailing axes.
    let per_channel = |v: &Tensor| -> Result<Tensor> {
        let mut v = v.clone();
        for _ in 2..x.rank() {
            v = v.unsqueeze(v.rank())?;
        }
        Ok(v)
    };
    let mut y = x.clone();
    if let Some(b) = bias {
        y = y.broadcast_add(&per_channel(&b.unsqueeze(0)?)?)?;
    }
    if let Some(e) = extra {
        y = y.broadcast_add(&per_channel(e)?)?;
    }
    match residual {
        Some(r) => r + y,
        None => Ok(y),
    }
}

/// bias (C) + extra (N, C) as the one vector the CUDA per-channel add takes: (N, C), or the bias
/// alone; None when both are absent.
#[cfg(feature = "cuda")]
pub(crate) fn per_channel_sum(
    bias: Option<&Tensor>,
    extra: Option<&Tensor>,
) -> Result<Option<Tensor>> {
    Ok(match (bias, extra) {
        (Some(b), Some(e)) => Some(e.broadcast_add(&b.unsqueeze(0)?)?),
        (Some(b), None) => Some(b.clone()),
        (None, Some(e)) => Some(e.clone()),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// The largest absolute difference between a and b.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn per_channel_sum_matches_broadcasting() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev).unwrap();
        let b = Tensor::randn(0f32, 1., 3, &dev).unwrap();
        let e = Tensor::randn(0f32, 1., (2, 3), &dev).unwrap();
        let r = Tensor::randn(0f32, 1., (2, 3, 4, 5), &dev).unwrap();
        let got = add_per_channel(&x, Some(&b), Some(&e), Some(&r)).unwrap();
        let want = ((x.broadcast_add(&b.reshape((1, 3, 1, 1)).unwrap()).unwrap())
            .broadcast_add(&e.reshape((2, 3, 1, 1)).unwrap())
            .unwrap()
            + &r)
            .unwrap();
        assert_eq!(max_diff(&got, &want), 0.0);
        let t = transpose_last2(&x).unwrap();
        assert_eq!(t.dims(), &[2, 3, 5, 4]);
        let back = transpose_last2(&t).unwrap();
        assert_eq!(max_diff(&back, &x), 0.0);
    }

    /// A weight stored channels last keeps its values under its NCHW dims, and handing it to a
    /// channels-last consumer reads that buffer as it is instead of transposing it again.
    #[test]
    fn a_channels_last_backed_tensor_is_read_without_a_copy() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1., (6, 5, 3, 3), &dev).unwrap();
        let stored = channels_last_backed(&w).unwrap();
        assert_eq!(stored.dims(), w.dims());
        assert!(!stored.is_contiguous());
        assert_eq!(max_diff(&stored, &w), 0.0);
        let nhwc = to_channels_last(&stored).unwrap();
        assert!(nhwc.is_contiguous());
        assert_eq!(nhwc.dims(), &[6, 3, 3, 5]);
        assert_eq!(max_diff(&nhwc, &to_channels_last(&w).unwrap()), 0.0);
        assert_eq!(max_diff(&from_channels_last(&nhwc).unwrap(), &w), 0.0);
        let buffer = |t: &Tensor| {
            let (storage, _) = t.storage_and_layout();
            std::ptr::from_ref(&*storage).addr()
        };
        assert_eq!(buffer(&nhwc), buffer(&stored), "copied the stored weight");
        assert_ne!(buffer(&to_channels_last(&w).unwrap()), buffer(&w));
        // A convolution (candle's on the CPU) reads the stored weight as the plain one.
        let x = Tensor::randn(0f32, 1., (2, 5, 7, 6), &dev).unwrap();
        let want = x.conv2d(&w, 1, 1, 1, 1).unwrap();
        let got = crate::nn::conv::convolve(&x, &stored, 1, 1).unwrap();
        assert!(max_diff(&got, &want) < 1e-5);
    }
}
