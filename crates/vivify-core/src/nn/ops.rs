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
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let t = transpose_last2(&x).unwrap();
        assert_eq!(t.dims(), &[2, 3, 5, 4]);
        let back = transpose_last2(&t).unwrap();
        let diff = (back - &x).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    }
}
