//! diffusers' `FeedForward`: `net.0` (GEGLU or GELU projection), `net.2` (output linear).

use super::compute::chunked;
use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder, linear};

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

impl FeedForward {
    /// As `forward`, at most `chunk` tokens (axis 1) at a time.
    pub fn forward_chunked(&self, x: &Tensor, chunk: Option<usize>) -> Result<Tensor> {
        chunked(x, 1, chunk, |x| self.forward(x))
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.proj.forward(x)?;
        let h = match self.activation {
            FeedForwardActivation::Geglu => {
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
