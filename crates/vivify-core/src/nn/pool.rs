//! `nn.AdaptiveAvgPool2d` for any input and output size, with PyTorch's bin edges.

use candle_core::{Device, Result, Tensor};

/// Averaging matrix (out, in): row i averages inputs [floor(i·in/out), ceil((i+1)·in/out)),
/// PyTorch's adaptive bins, which overlap when out > in.
fn bin_matrix(input: usize, output: usize, device: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; output * input];
    for i in 0..output {
        let start = (i * input) / output;
        let end = ((i + 1) * input).div_ceil(output);
        let weight = 1.0 / (end - start) as f32;
        for j in start..end {
            m[i * input + j] = weight;
        }
    }
    Tensor::from_vec(m, (output, input), device)
}

/// (N, C, H, W) -> (N, C, out_h, out_w). An average over a rectangle is the product of the
/// averages over its rows and columns, so two small matmuls do the whole pool.
pub fn adaptive_avg_pool2d(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        candle_core::bail!(
            "adaptive_avg_pool2d: empty input or output ({h}x{w} -> {out_h}x{out_w})"
        );
    }
    let dtype = x.dtype();
    let rows = bin_matrix(h, out_h, x.device())?.to_dtype(dtype)?;
    let cols = bin_matrix(w, out_w, x.device())?.to_dtype(dtype)?.t()?;
    rows.broadcast_matmul(&x.broadcast_matmul(&cols)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_match_pytorch_rules() {
        // 5 -> 3: bins [0,2), [1,4), [3,5).
        let m = bin_matrix(5, 3, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(m[0], vec![0.5, 0.5, 0.0, 0.0, 0.0]);
        assert_eq!(m[1], vec![0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0, 0.0]);
        assert_eq!(m[2], vec![0.0, 0.0, 0.0, 0.5, 0.5]);
        // 2 -> 4 (upsampling): each output copies one input.
        let m = bin_matrix(2, 4, &Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(
            m,
            vec![vec![1., 0.], vec![1., 0.], vec![0., 1.], vec![0., 1.]]
        );
    }
}
