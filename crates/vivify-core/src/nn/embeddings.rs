//! Sinusoidal timestep features (`Timesteps`) and the `TimestepEmbedding` MLP.

use crate::nn::linear::{Linear, linear};
use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// diffusers' `get_timestep_embedding` with `flip_sin_to_cos=True`, `downscale_freq_shift=0`,
/// `max_period=10000`, as I2VGen-XL uses it: (N, dim) f32 `[cos(t·f), sin(t·f)]`.
///
/// Computed on the host in f32 step by step as PyTorch does, because t·f reaches ~1000 radians
/// and any other rounding of the frequencies shows up in the fourth digit of the result.
pub fn timestep_features(timesteps: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let log_period = -(10000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|i| ((i as f32 * log_period) / half as f32).exp())
        .collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let args: Vec<f32> = freqs.iter().map(|&f| t * f).collect();
        out.extend(args.iter().map(|a| a.cos()));
        out.extend(args.iter().map(|a| a.sin()));
        // An odd width is zero-padded, as in diffusers.
        out.extend(std::iter::repeat_n(0f32, dim - 2 * half));
    }
    Tensor::from_vec(out, (timesteps.len(), dim), device)
}

/// `linear_1` -> SiLU -> `linear_2` (also used, with Sequential names, for `fps_embedding`).
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
}

impl TimestepEmbedding {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::with_names(vb, in_dim, out_dim, "linear_1", "linear_2")
    }

    /// The same MLP stored under other names (`fps_embedding.0` / `.2`).
    pub fn with_names(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        first: &str,
        second: &str,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: linear(in_dim, out_dim, vb.pp(first))?,
            linear_2: linear(out_dim, out_dim, vb.pp(second))?,
        })
    }
}

impl Module for TimestepEmbedding {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.linear_2.forward(&self.linear_1.forward(x)?.silu()?)
    }
}
