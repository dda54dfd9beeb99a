//! `CLIPVisionModelWithProjection`: patch and class embeddings, `pre_layrnorm`, the encoder,
//! `post_layernorm` on the class token, and a bias-free `visual_projection`. I2VGen-XL uses its
//! `image_embeds` (`I2VGenXLPipeline._encode_image`).

use super::config::ClipVisionConfig;
use super::{ClipEncoder, EncoderShape, WEIGHTS_STEM, drop_ignored_buffers, has_prefix};
use crate::nn::conv_cfg;
use crate::nn::linear::{Linear, linear_no_bias};
use crate::nn::norm::LayerNorm;
use crate::weights::{Checkpoint, TensorSpec, find_weight_files, spec_of};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv2d, Embedding, VarBuilder, conv2d_no_bias, embedding};
use std::path::Path;

/// Name prefix of the vision tower; `visual_projection` sits outside it.
pub const VISION_PREFIX: &str = "vision_model";

/// `CLIPVisionEmbeddings`: a class token followed by one token per patch, plus positions.
#[derive(Debug, Clone)]
pub struct ClipVisionEmbeddings {
    pub class_embedding: Tensor,
    pub patch_embedding: Conv2d,
    pub position_embedding: Embedding,
}

#[derive(Debug, Clone)]
pub struct ClipVisionModelWithProjection {
    pub config: ClipVisionConfig,
    pub embeddings: ClipVisionEmbeddings,
    pub pre_layrnorm: LayerNorm,
    pub encoder: ClipEncoder,
    pub post_layernorm: LayerNorm,
    pub visual_projection: Linear,
    dtype: DType,
}

impl ClipVisionModelWithProjection {
    /// Builds the model from `vb` rooted at the file, with the published names
    /// (`vision_model.*`, `visual_projection.weight`).
    pub fn new(config: &ClipVisionConfig, vb: VarBuilder) -> Result<Self> {
        Self::build(config, vb, true)
    }

    /// `prefixed`: the tower's tensors are under `vision_model.` (else at the root, next to
    /// `visual_projection.weight`).
    fn build(config: &ClipVisionConfig, vb: VarBuilder, prefixed: bool) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let tower = if prefixed {
            vb.pp(VISION_PREFIX)
        } else {
            vb.clone()
        };
        let h = config.hidden_size;
        let eps = config.layer_norm_eps;
        let emb = tower.pp("embeddings");
        let positions = config.patches_per_side().pow(2) + 1;
        Ok(Self {
            config: config.clone(),
            embeddings: ClipVisionEmbeddings {
                class_embedding: emb.get(h, "class_embedding")?,
                patch_embedding: conv2d_no_bias(
                    config.num_channels,
                    h,
                    config.patch_size,
                    conv_cfg(config.patch_size, 0),
                    emb.pp("patch_embedding"),
                )?,
                position_embedding: embedding(positions, h, emb.pp("position_embedding"))?,
            },
            pre_layrnorm: LayerNorm::new(tower.pp("pre_layrnorm"), h, eps)?,
            encoder: ClipEncoder::new(
                tower.pp("encoder"),
                EncoderShape {
                    hidden: h,
                    intermediate: config.intermediate_size,
                    heads: config.num_attention_heads,
                    layers: config.num_hidden_layers,
                    act: config.hidden_act,
                    eps,
                },
            )?,
            post_layernorm: LayerNorm::new(tower.pp("post_layernorm"), h, eps)?,
            visual_projection: linear_no_bias(
                h,
                config.projection_dim,
                vb.pp("visual_projection"),
            )?,
            dtype: vb.dtype(),
        })
    }

    /// The tensors of the model; the tower under `vision_model.` when `prefixed`.
    pub fn spec(config: &ClipVisionConfig, prefixed: bool) -> Result<Vec<TensorSpec>> {
        spec_of(|vb| Self::build(config, vb, prefixed))
    }

    /// Loads `config.json` and `model[.variant].safetensors` (or its shards) from a transformers
    /// component directory, computing in `dtype`. The tower may be named with or without the
    /// `vision_model.` prefix; a leftover `position_ids` buffer is ignored. Any missing,
    /// unexpected or mis-shaped tensor is refused, naming each.
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
        let config = ClipVisionConfig::from_file(&dir.join("config.json"))?;
        let mut checkpoint = Checkpoint::open(&find_weight_files(dir, WEIGHTS_STEM, variant)?)?;
        drop_ignored_buffers(&mut checkpoint);
        let prefixed = has_prefix(&checkpoint, VISION_PREFIX);
        let vb = checkpoint.var_builder(&Self::spec(&config, prefixed)?, dtype, device)?;
        Ok(Self::build(&config, vb, prefixed)?)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Class and patch tokens with positions: (B, 3, S, S) -> (B, 1 + (S/patch)², hidden), S the
    /// config's image_size (other sizes are refused, as transformers does without
    /// `interpolate_pos_encoding`).
    pub fn embed(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let dims = pixel_values.dims();
        let (c, s) = (self.config.num_channels, self.config.image_size);
        if dims.len() != 4 || dims[0] == 0 || dims[1] != c || dims[2] != s || dims[3] != s {
            candle_core::bail!("pixel_values must be (batch, {c}, {s}, {s}), got shape {dims:?}");
        }
        if !pixel_values.dtype().is_float() {
            candle_core::bail!(
                "pixel_values must be floats, got {:?}",
                pixel_values.dtype()
            );
        }
        let b = dims[0];
        let h = self.config.hidden_size;
        let patches = self
            .embeddings
            .patch_embedding
            .forward(&pixel_values.to_dtype(self.dtype)?)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let class = self
            .embeddings
            .class_embedding
            .reshape((1, 1, h))?
            .broadcast_as((b, 1, h))?;
        Tensor::cat(&[&class, &patches], 1)?
            .broadcast_add(self.embeddings.position_embedding.embeddings())
    }

    /// transformers' `last_hidden_state`: embeddings, `pre_layrnorm`, every layer (no final
    /// norm), (B, tokens, hidden).
    pub fn last_hidden_state(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let x = self.pre_layrnorm.forward(&self.embed(pixel_values)?)?;
        self.encoder
            .forward_first(&x, None, self.config.num_hidden_layers)
    }

    /// `image_embeds`, (B, projection_dim): the class token of the last layer through
    /// `post_layernorm` and `visual_projection`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let cls = self
            .last_hidden_state(pixel_values)?
            .narrow(1, 0, 1)?
            .squeeze(1)?;
        self.visual_projection
            .forward(&self.post_layernorm.forward(&cls)?)
    }
}
