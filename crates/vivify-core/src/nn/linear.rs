//! A linear layer that runs as one GEMM with the bias fused on CUDA (`cuda::linear`) and as
//! candle's `Linear` elsewhere. Constructors mirror candle_nn's so the state-dict names match.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            inner: candle_nn::Linear::new(weight, bias),
        }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }

    pub fn bias(&self) -> Option<&Tensor> {
        self.inner.bias()
    }

    /// `forward` without the bias, for a caller that adds it in a later pass.
    pub fn forward_without_bias(&self, x: &Tensor) -> Result<Tensor> {
        let _p = super::profile::scope("linear", x.device());
        #[cfg(feature = "cuda")]
        if let Some(y) = super::cuda::linear::linear(x, self.weight(), None)? {
            return Ok(y);
        }
        candle_nn::Linear::new(self.weight().clone(), None).forward(x)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let _p = super::profile::scope("linear", x.device());
        #[cfg(feature = "cuda")]
        if let Some(y) = super::cuda::linear::linear(x, self.weight(), self.bias())? {
            return Ok(y);
        }
        self.inner.forward(x)
    }
}

/// `in_dim -> out_dim` with a bias.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, true, vb)
}

/// `in_dim -> out_dim`, with a bias when `bias`.
pub fn linear_b(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let l = candle_nn::linear_b(in_dim, out_dim, bias, vb)?;
    Ok(Linear { inner: l })
}

/// `in_dim -> out_dim` without a bias.
pub fn linear_no_bias(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    linear_b(in_dim, out_dim, false, vb)
}
