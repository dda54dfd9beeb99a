//! `CLIPTextModel`: token and position embeddings, a causally masked encoder, final layer norm.
//!
//! I2VGen-XL's pipeline (`I2VGenXLPipeline.__call__`, diffusers 0.42.1) defaults to
//! `clip_skip=1`, so its prompt embedding is `final_layer_norm(hidden_states[-2])`: the output of
//! the penultimate layer, normed. `clip_skip=None` would give `last_hidden_state` instead. That
//! is [`ClipTextModel::forward`] and [`ClipTextModel::last_hidden_state`] here.
//!
//! (diffusers 0.42.1 reaches the norm as `text_encoder.text_model.final_layer_norm`; with
//! transformers 5, whose `CLIPTextModel` has no `text_model`, that default path raises
//! AttributeError. The semantics above are those of transformers 4, where it runs.)

use super::config::ClipTextConfig;
use super::{
    ClipEncoder, EncoderShape, WEIGHTS_STEM, causal_mask, drop_ignored_buffers, has_prefix,
};
use crate::nn::norm::LayerNorm;
use crate::weights::{Checkpoint, TensorSpec, find_weight_files, spec_of};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Embedding, VarBuilder, embedding};
use std::path::Path;

/// Name prefix of the text tower in published checkpoints.
pub const TEXT_PREFIX: &str = "text_model";

/// `CLIPTextEmbeddings`: token embedding plus learned absolute position embedding.
#[derive(Debug, Clone)]
pub struct ClipTextEmbeddings {
    pub token_embedding: Embedding,
    pub position_embedding: Embedding,
}

#[derive(Debug, Clone)]
pub struct ClipTextModel {
    pub config: ClipTextConfig,
    pub embeddings: ClipTextEmbeddings,
    pub encoder: ClipEncoder,
    pub final_layer_norm: LayerNorm,
    dtype: DType,
}

impl ClipTextModel {
    /// Builds the model from `vb` rooted at the tower (below any `text_model` prefix).
    pub fn new(config: &ClipTextConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let h = config.hidden_size;
        let emb = vb.pp("embeddings");
        Ok(Self {
            config: config.clone(),
            embeddings: ClipTextEmbeddings {
                token_embedding: embedding(config.vocab_size, h, emb.pp("token_embedding"))?,
                position_embedding: embedding(
                    config.max_position_embeddings,
                    h,
                    emb.pp("position_embedding"),
                )?,
            },
            encoder: ClipEncoder::new(
                vb.pp("encoder"),
                EncoderShape {
                    hidden: h,
                    intermediate: config.intermediate_size,
                    heads: config.num_attention_heads,
                    layers: config.num_hidden_layers,
                    act: config.hidden_act,
                    eps: config.layer_norm_eps,
                },
            )?,
            final_layer_norm: LayerNorm::new(vb.pp("final_layer_norm"), h, config.layer_norm_eps)?,
            dtype: vb.dtype(),
        })
    }

    /// The tensors of the model, named with the `text_model.` prefix when `prefixed`.
    pub fn spec(config: &ClipTextConfig, prefixed: bool) -> Result<Vec<TensorSpec>> {
        spec_of(|vb| Self::new(config, if prefixed { vb.pp(TEXT_PREFIX) } else { vb }))
    }

    /// Loads `config.json` and `model[.variant].safetensors` (or its shards) from a transformers
    /// component directory, computing in `dtype`. Both the published `text_model.*` names and
    /// the bare names transformers 5 writes are accepted; a leftover `position_ids` buffer is
    /// ignored. Any missing, unexpected or mis-shaped tensor is refused, naming each.
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
        let config = ClipTextConfig::from_file(&dir.join("config.json"))?;
        let mut checkpoint = Checkpoint::open(&find_weight_files(dir, WEIGHTS_STEM, variant)?)?;
        drop_ignored_buffers(&mut checkpoint);
        let prefixed = has_prefix(&checkpoint, TEXT_PREFIX);
        let vb = checkpoint.var_builder(&Self::spec(&config, prefixed)?, dtype, device)?;
        let vb = if prefixed { vb.pp(TEXT_PREFIX) } else { vb };
        Ok(Self::new(&config, vb)?)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Token plus position embeddings of `input_ids` (B, L), L ≤ max_position_embeddings, any
    /// integer dtype: (B, L, hidden) in the model dtype. Ids outside the vocabulary are an error.
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = self.checked_ids(input_ids)?;
        let (_, l) = ids.dims2()?;
        let tokens = self.embeddings.token_embedding.forward(&ids)?;
        let positions = self
            .embeddings
            .position_embedding
            .embeddings()
            .narrow(0, 0, l)?;
        tokens.broadcast_add(&positions)
    }

    /// What I2VGen-XL conditions on: `clip_skip = 1`, the penultimate layer's output through
    /// `final_layer_norm`, (B, L, hidden). The last layer is not computed.
    pub fn forward(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with_clip_skip(input_ids, Some(1))
    }

    /// transformers' `last_hidden_state`: every layer, then `final_layer_norm`.
    pub fn last_hidden_state(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.forward_with_clip_skip(input_ids, None)
    }

    /// diffusers' `encode_prompt` for a `clip_skip`: None (or 0) is `last_hidden_state`; k ≥ 1
    /// is `final_layer_norm(hidden_states[-(k + 1)])`, which skips the last k layers.
    pub fn forward_with_clip_skip(
        &self,
        input_ids: &Tensor,
        clip_skip: Option<usize>,
    ) -> Result<Tensor> {
        let layers = self.config.num_hidden_layers;
        let skip = clip_skip.unwrap_or(0);
        if skip > layers {
            candle_core::bail!("clip_skip {skip} exceeds the text encoder's {layers} layers");
        }
        let x = self.embed(input_ids)?;
        let mask = causal_mask(x.dim(1)?, x.device())?;
        let x = self.encoder.forward_first(&x, Some(&mask), layers - skip)?;
        self.final_layer_norm.forward(&x)
    }

    /// Checks shape, dtype and range of the ids and returns them as u32 on the model's device.
    fn checked_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let dims = input_ids.dims();
        let max_len = self.config.max_position_embeddings;
        let [b, l] = *dims else {
            candle_core::bail!("input_ids must be (batch, tokens), got shape {dims:?}");
        };
        if b == 0 || l == 0 || l > max_len {
            candle_core::bail!(
                "input_ids of shape {dims:?}: need at least one row and 1 to {max_len} tokens"
            );
        }
        if !input_ids.dtype().is_int() {
            candle_core::bail!("input_ids must be integers, got {:?}", input_ids.dtype());
        }
        let vocab = self.config.vocab_size as i64;
        let values: Vec<i64> = input_ids.to_dtype(DType::I64)?.flatten_all()?.to_vec1()?;
        if let Some(bad) = values.iter().find(|&&v| v < 0 || v >= vocab) {
            candle_core::bail!("token id {bad} is outside the vocabulary of {vocab}");
        }
        let ids: Vec<u32> = values.into_iter().map(|v| v as u32).collect();
        let device = self.embeddings.token_embedding.embeddings().device();
        Tensor::from_vec(ids, (b, l), device)
    }
}
