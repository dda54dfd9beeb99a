//! CLIP encoders as transformers names them: the text model I2VGen-XL conditions on
//! (`CLIPTextModel`) and its image encoder (`CLIPVisionModelWithProjection`). Both share the
//! pre-norm transformer encoder below.

pub mod config;
pub mod text;
pub mod vision;

pub use config::{Activation, ClipTextConfig, ClipVisionConfig};
pub use text::ClipTextModel;
pub use vision::ClipVisionModelWithProjection;

use crate::nn::linear::{Linear, linear};
use crate::nn::norm::LayerNorm;
use crate::weights::Checkpoint;
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

/// File stem of transformers' model weights.
pub const WEIGHTS_STEM: &str = "model";

/// Non-persistent buffers that files written by older transformers versions still carry. They
/// are recomputed, never read, so their presence is not a mismatch.
const IGNORED_BUFFERS: [&str; 3] = [
    "embeddings.position_ids",
    "text_model.embeddings.position_ids",
    "vision_model.embeddings.position_ids",
];

/// Whether a checkpoint names its tower tensors under `prefix` (e.g. `text_model`): published
/// files do; transformers 5 saves `CLIPTextModel` without it.
pub fn has_prefix(checkpoint: &Checkpoint, prefix: &str) -> bool {
    let dotted = format!("{prefix}.");
    checkpoint.tensors.keys().any(|k| k.starts_with(&dotted))
}

/// Forgets the ignorable buffers so that the checkpoint check does not report them.
pub fn drop_ignored_buffers(checkpoint: &mut Checkpoint) {
    checkpoint
        .tensors
        .retain(|name, _| !IGNORED_BUFFERS.contains(&name.as_str()));
}

/// `CLIPAttention`: multi-head self-attention with biased q/k/v/out projections and scores
/// scaled by head_dim^-0.5.
#[derive(Debug, Clone)]
pub struct ClipAttention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    heads: usize,
    head_dim: usize,
}

impl ClipAttention {
    pub fn new(vb: VarBuilder, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            q_proj: linear(hidden, hidden, vb.pp("q_proj"))?,
            k_proj: linear(hidden, hidden, vb.pp("k_proj"))?,
            v_proj: linear(hidden, hidden, vb.pp("v_proj"))?,
            out_proj: linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// (B, L, D) -> (B, L, D). `mask` is an additive f32 (L, L) mask (0 or −∞), added to the
    /// scores after scaling, in f32 like the softmax.
    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, l, d) = x.dims3()?;
        let q = self.split_heads(&self.q_proj.forward(x)?, b, l)?;
        let k = self.split_heads(&self.k_proj.forward(x)?, b, l)?;
        let v = self.split_heads(&self.v_proj.forward(x)?, b, l)?;
        let dtype = q.dtype();
        let scale = (self.head_dim as f64).powf(-0.5);
        // Half types: the scores leave the matmul in their dtype, then mask and softmax run in
        // f32 as transformers' `softmax(..., dtype=torch.float32)` does.
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(dtype)?;
        let out = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, l, d))?;
        self.out_proj.forward(&out)
    }

    /// (B, L, H·D) -> (B, H, L, D), contiguous for the batched matmul.
    fn split_heads(&self, x: &Tensor, b: usize, l: usize) -> Result<Tensor> {
        x.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }
}

/// `CLIPMLP`: fc1, activation, fc2.
#[derive(Debug, Clone)]
pub struct ClipMlp {
    fc1: Linear,
    fc2: Linear,
    act: Activation,
}

impl ClipMlp {
    pub fn new(
        vb: VarBuilder,
        hidden: usize,
        intermediate: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            fc1: linear(hidden, intermediate, vb.pp("fc1"))?,
            fc2: linear(intermediate, hidden, vb.pp("fc2"))?,
            act,
        })
    }
}

impl Module for ClipMlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = match self.act {
            Activation::Gelu => h.gelu_erf()?,
            Activation::QuickGelu => (&h * candle_nn::ops::sigmoid(&(&h * 1.702)?)?)?,
        };
        self.fc2.forward(&h)
    }
}

/// `CLIPEncoderLayer`: pre-norm attention and MLP, each with a residual.
#[derive(Debug, Clone)]
pub struct ClipEncoderLayer {
    pub self_attn: ClipAttention,
    pub layer_norm1: LayerNorm,
    pub mlp: ClipMlp,
    pub layer_norm2: LayerNorm,
}

/// The shape of an encoder stack, common to the text and vision configs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EncoderShape {
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub layers: usize,
    pub act: Activation,
    pub eps: f64,
}

impl ClipEncoderLayer {
    fn new(vb: VarBuilder, s: EncoderShape) -> Result<Self> {
        Ok(Self {
            self_attn: ClipAttention::new(vb.pp("self_attn"), s.hidden, s.heads)?,
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), s.hidden, s.eps)?,
            mlp: ClipMlp::new(vb.pp("mlp"), s.hidden, s.intermediate, s.act)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), s.hidden, s.eps)?,
        })
    }

    pub fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let h = (x + self
            .self_attn
            .forward(&self.layer_norm1.forward(x)?, mask)?)?;
        &h + self.mlp.forward(&self.layer_norm2.forward(&h)?)?
    }
}

/// `CLIPEncoder`: the layer stack.
#[derive(Debug, Clone)]
pub struct ClipEncoder {
    pub layers: Vec<ClipEncoderLayer>,
}

impl ClipEncoder {
    pub(crate) fn new(vb: VarBuilder, s: EncoderShape) -> Result<Self> {
        let vb = vb.pp("layers");
        let layers = (0..s.layers)
            .map(|i| ClipEncoderLayer::new(vb.pp(i), s))
            .collect::<Result<_>>()?;
        Ok(Self { layers })
    }

    /// Runs the first `count` layers (all when `count` is the layer count).
    pub fn forward_first(&self, x: &Tensor, mask: Option<&Tensor>, count: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in self.layers.iter().take(count) {
            x = layer.forward(&x, mask)?;
        }
        Ok(x)
    }
}

/// The additive causal mask of CLIP's text model: 0 on and below the diagonal, −∞ above, (L, L)
/// in f32. Every row keeps its diagonal, so no softmax row is all −∞.
pub fn causal_mask(len: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..len)
        .flat_map(|i| (0..len).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(values, (len, len), device)
}
