//! diffusers' `FeedForward`: `net.0` (GEGLU or GELU projection), `net.2` (output linear).

use super::compute::chunked;
use crate::nn::linear::{Linear, linear};
use candle_core::{D, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// `proj` to twice the inner width, value · GELU(gate).
    Geglu,
    /// `proj` to the inner width, then exact GELU.
    Gelu,
}

#[derive(Debug, Clone)]
pub struct FeedForward {
    proj: Linear,
    out: Linear,
    activation: FeedForwardActivation,
}

impl FeedForward {
    pub fn new(
        vb: VarBuilder,
        dim: usize,
        inner_dim: usize,
        activation: FeedForwardActivation,
    ) -> Result<Self> {
        let proj_out = match activation {
            FeedForwardActivation::Geglu => inner_dim * 2,
            FeedForwardActivation::Gelu => inner_dim,
        };
        Ok(Self {
            proj: linear(dim, proj_out, vb.pp("net.0.proj"))?,
            out: linear(inner_dim, dim, vb.pp("net.2"))?,
            activation,
        })
    }
}

/// Elements of the projection's output per pass at most: candle's CUDA batched matmul fails past
/// 2^31 elements (1024x1024x32 with guidance makes a 2.7e9-element GEGLU hidden), so larger
/// inputs run as token runs below this, whatever the plan says.
const MAX_HIDDEN_ELEMENTS: usize = 1 << 30;

impl FeedForward {
    /// As `forward`, at most `chunk` tokens (axis 1) at a time.
    pub fn forward_chunked(&self, x: &Tensor, chunk: Option<usize>) -> Result<Tensor> {
        self.forward_limited(x, chunk, MAX_HIDDEN_ELEMENTS)
    }

    fn forward_limited(
        &self,
        x: &Tensor,
        chunk: Option<usize>,
        max_hidden: usize,
    ) -> Result<Tensor> {
        let (n, l, c) = x.dims3()?;
        let width = self.proj.weight().dim(0)?;
        if n * l * width <= max_hidden {
            return chunked(x, 1, chunk, |x| self.forward(x));
        }
        // All rows as one token axis, cut into runs that keep the hidden under the limit.
        let run = (max_hidden / width).max(1);
        let run = chunk.map_or(run, |c| c.clamp(1, run));
        chunked(&x.reshape((1, n * l, c))?, 1, Some(run), |x| {
            self.forward(x)
        })?
        .reshape((n, l, ()))
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let _p = super::profile::scope("geglu", x.device());
        let h = match self.activation {
            FeedForwardActivation::Geglu => {
                #[cfg(feature = "cuda")]
                if let Some(out) = super::cuda::geglu::geglu(&h)? {
                    return self.out.forward(&out);
                }
                let half = h.dim(D::Minus1)? / 2;
                let value = h.narrow(D::Minus1, 0, half)?;
                let gate = h.narrow(D::Minus1, half, half)?;
                (value * gate.gelu_erf()?)?
            }
            FeedForwardActivation::Gelu => h.gelu_erf()?,
        };
        self.out.forward(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn large_inputs_run_in_token_runs_with_the_same_result() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let ff = FeedForward::new(vb, 8, 32, FeedForwardActivation::Geglu).unwrap();
        let x = Tensor::randn(0f32, 1., (3, 10, 8), &Device::Cpu).unwrap();
        let plain = ff.forward(&x).unwrap();
        // 3·10 tokens x 64 wide is over a 500-element limit: runs of 7 tokens across rows.
        for chunk in [None, Some(4)] {
            let limited = ff.forward_limited(&x, chunk, 500).unwrap();
            assert_eq!(limited.dims(), plain.dims());
            let diff = (limited - &plain)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            let diff = diff.to_scalar::<f32>().unwrap();
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
