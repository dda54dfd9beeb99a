//! diffusers' `Attention` (to_q, to_k, to_v, to_out.0) with scaled dot-product attention.

use super::compute::{ComputeOptions, chunked, chunked_range};
use crate::nn::linear::{Linear, linear_b};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
}

impl Attention {
    /// `context_dim` is the width of the keys' source (None: self-attention on `query_dim`).
    pub fn new(
        vb: VarBuilder,
        query_dim: usize,
        context_dim: Option<usize>,
        heads: usize,
        dim_head: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let inner = heads * dim_head;
        let kv_dim = context_dim.unwrap_or(query_dim);
        Ok(Self {
            to_q: linear_b(query_dim, inner, qkv_bias, vb.pp("to_q"))?,
            to_k: linear_b(kv_dim, inner, qkv_bias, vb.pp("to_k"))?,
            to_v: linear_b(kv_dim, inner, qkv_bias, vb.pp("to_v"))?,
            to_out: linear_b(inner, query_dim, true, vb.pp("to_out").pp("0"))?,
            heads,
            dim_head,
        })
    }

    /// (N, L, query_dim) attending to `context` (N, S, context_dim), or to itself.
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.forward_chunked(x, context, ComputeOptions::default())
    }

    /// As `forward`, with at most `opts.attention_head_chunk` batch·head rows and
    /// `opts.attention_query_chunk` queries per score matrix.
    pub fn forward_chunked(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        opts: ComputeOptions,
    ) -> Result<Tensor> {
        let _p = super::profile::scope("attention, other", x.device());
        let context = context.unwrap_or(x);
        let q = self.split_heads(&self.to_q.forward(x)?)?;
        let k = self.split_heads(&self.to_k.forward(context)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let out = attend(&q, &k, &v, opts)?;
        let (n, l, h, d) = out.dims4()?;
        self.to_out.forward(&out.reshape((n, l, h * d))?)
    }

    /// (N, L, H·D) -> (N, H, L, D) as a view: the fused kernel reads the heads in place.
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (n, l, _) = x.dims3()?;
        x.reshape((n, l, self.heads, self.dim_head))?
            .transpose(1, 2)
    }
}

/// softmax(q kᵀ / √d) v over (N, H, L, D) tensors (views allowed), as (N, L, H, D): fused on
/// CUDA where the kernel covers the case (no score matrix, so the chunk options do not apply),
/// else through score matrices of at most the planned chunk size.
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
    let _p = super::profile::scope("attention kernel", q.device());
    #[cfg(feature = "cuda")]
    if let Some(out) = super::cuda::flash_attention::flash_attention(q, k, v)? {
        return Ok(out);
    }
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    let (n, h, l, d) = q.dims4()?;
    let s = k.dim(2)?;
    // Batch and heads as one axis (a leading 1 keeps the 4-D layout) to slice them together.
    let q = q.reshape((1, n * h, l, d))?;
    let (k, v) = (k.reshape((1, n * h, s, d))?, v.reshape((1, n * h, s, d))?);
    chunked_range(n * h, opts.attention_head_chunk, 1, |start, len| {
        let (k, v) = (k.narrow(1, start, len)?, v.narrow(1, start, len)?);
        chunked(
            &q.narrow(1, start, len)?,
            2,
            opts.attention_query_chunk,
            |q| scaled_dot_product_attention(q, &k, &v),
        )
    })?
    .reshape((n, h, l, d))?
    .transpose(1, 2)
}

/// softmax(q kᵀ / √d) v over (N, H, L, D) tensors; the softmax runs in f32 for half types.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let dtype = q.dtype();
    let scale = 1.0 / (q.dim(3)? as f64).sqrt();
    let scores = (q.matmul(&k.t()?)? * scale)?;
    let probs = match dtype {
        DType::F16 | DType::BF16 => {
            candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?
        }
        _ => candle_nn::ops::softmax_last_dim(&scores)?,
    };
    probs.matmul(v)
}
