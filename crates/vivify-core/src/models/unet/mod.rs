//! `I2VGenXLUNet`: the denoiser. State-dict names follow diffusers so a published checkpoint
//! loads unchanged.

pub mod blocks;
pub mod image_latents;

use crate::config::{DownBlockType, TRANSFORMER_IN_HEADS, UNetConfig, UpBlockType};
use crate::nn::compute::{ComputeOptions, per_frame_chunks};
use crate::nn::conv::{Conv2d, conv2d};
use crate::nn::conv_cfg;
use crate::nn::embeddings::{TimestepEmbedding, timestep_features};
use crate::nn::linear::{Linear, linear};
use crate::nn::norm::GroupNorm;
use crate::nn::transformer::TransformerTemporalModel;
use crate::weights::{Checkpoint, find_weight_files, unet_spec};
use blocks::{BlockInputs, BlockShape, DownBlock, MidBlock, UpBlock, UpChannels};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use image_latents::{ContextEmbedding, ProjIn, TemporalEncoder};
use std::path::Path;

/// File stem of diffusers' model weights.
pub const WEIGHTS_STEM: &str = "diffusion_pytorch_model";

/// One call's conditioning. Shapes use B = batch (2 with classifier-free guidance), F = frames.
#[derive(Debug, Clone, Copy)]
pub struct UNetInputs<'a> {
    /// Noisy latents (B, 4, F, h, w).
    pub sample: &'a Tensor,
    pub timestep: f32,
    /// Target frames per second, embedded like a timestep.
    pub fps: f32,
    /// Image-conditioning latents (B, 4, F, h, w).
    pub image_latents: &'a Tensor,
    /// CLIP image embedding (B, cross_attention_dim).
    pub image_embeddings: &'a Tensor,
    /// Text encoder states (B, tokens, cross_attention_dim).
    pub encoder_hidden_states: &'a Tensor,
    /// Memory-bounding choices (chunked attention and feed-forward).
    pub options: ComputeOptions,
}

/// `context_embedding`: the image embedding -> 4 context tokens.
#[derive(Debug, Clone)]
pub struct ImageEmbeddingProjection {
    linear_0: Linear,
    linear_2: Linear,
    tokens: usize,
}

impl ImageEmbeddingProjection {
    fn new(vb: VarBuilder, cross: usize, hidden: usize, tokens: usize) -> Result<Self> {
        Ok(Self {
            linear_0: linear(cross, hidden, vb.pp("0"))?,
            linear_2: linear(hidden, cross * tokens, vb.pp("2"))?,
            tokens,
        })
    }

    /// (B, cross) -> (B, tokens, cross).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let out = self.linear_2.forward(&self.linear_0.forward(x)?.silu()?)?;
        let (b, n) = out.dims2()?;
        out.reshape((b, self.tokens, n / self.tokens))
    }
}

#[derive(Debug, Clone)]
pub struct I2VGenXLUNet {
    pub config: UNetConfig,
    pub time_embedding: TimestepEmbedding,
    pub fps_embedding: TimestepEmbedding,
    pub context_embedding: ImageEmbeddingProjection,
    pub image_latents_context_embedding: ContextEmbedding,
    pub image_latents_proj_in: ProjIn,
    pub image_latents_temporal_encoder: TemporalEncoder,
    pub conv_in: Conv2d,
    pub transformer_in: TransformerTemporalModel,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    dtype: DType,
}

/// Repeats each batch row `times` times in place: diffusers' `repeat_interleave(times, dim=0)`.
fn repeat_interleave_rows(x: &Tensor, times: usize) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let mut expanded = dims.clone();
    expanded.insert(1, times);
    let out = x.unsqueeze(1)?.broadcast_as(expanded)?;
    dims[0] *= times;
    out.reshape(dims)
}

impl I2VGenXLUNet {
    pub fn new(config: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let ch = &config.block_out_channels;
        let c = config.in_channels;
        let groups = config.norm_num_groups;
        let cross = config.cross_attention_dim;
        let temb = config.time_embed_dim();
        let shape = BlockShape {
            temb_channels: temb,
            groups,
            head_dim: config.attention_head_dim,
            cross_attention_dim: cross,
        };
        let n = ch.len();

        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, kind) in config.down_block_types.iter().enumerate() {
            let c_in = c_out;
            c_out = ch[i];
            down_blocks.push(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                c_in,
                c_out,
                config.layers_per_block,
                shape,
                *kind == DownBlockType::CrossAttnDownBlock3D,
                i + 1 < n,
            )?);
        }

        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(n);
        let mut prev_output;
        let mut output = reversed[0];
        for (i, kind) in config.up_block_types.iter().enumerate() {
            prev_output = output;
            output = reversed[i];
            let input = reversed[(i + 1).min(n - 1)];
            up_blocks.push(UpBlock::new(
                vb.pp("up_blocks").pp(i),
                UpChannels {
                    input,
                    output,
                    prev_output,
                },
                config.layers_per_block + 1,
                shape,
                *kind == UpBlockType::CrossAttnUpBlock3D,
                i + 1 < n,
            )?);
        }

        Ok(Self {
            config: config.clone(),
            time_embedding: TimestepEmbedding::new(vb.pp("time_embedding"), ch[0], temb)?,
            fps_embedding: TimestepEmbedding::with_names(
                vb.pp("fps_embedding"),
                ch[0],
                temb,
                "0",
                "2",
            )?,
            context_embedding: ImageEmbeddingProjection::new(
                vb.pp("context_embedding"),
                cross,
                temb,
                c,
            )?,
            image_latents_context_embedding: ContextEmbedding::new(
                vb.pp("image_latents_context_embedding"),
                c,
                cross,
            )?,
            image_latents_proj_in: ProjIn::new(vb.pp("image_latents_proj_in"), c)?,
            image_latents_temporal_encoder: TemporalEncoder::new(
                vb.pp("image_latents_temporal_encoder"),
                c,
            )?,
            conv_in: conv2d(2 * c, ch[0], 3, conv_cfg(1, 1), vb.pp("conv_in"))?,
            transformer_in: TransformerTemporalModel::new(
                vb.pp("transformer_in"),
                ch[0],
                TRANSFORMER_IN_HEADS,
                config.attention_head_dim,
                groups,
            )?,
            down_blocks,
            mid_block: MidBlock::new(vb.pp("mid_block"), ch[n - 1], shape)?,
            up_blocks,
            conv_norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, ch[0], 1e-5)?,
            conv_out: conv2d(
                ch[0],
                config.out_channels,
                3,
                conv_cfg(1, 1),
                vb.pp("conv_out"),
            )?,
            dtype: vb.dtype(),
        })
    }

    /// Loads `unet/config.json` and the weights from a diffusers component directory,
    /// preferring the `variant` file (e.g. `fp16`) when present, computing in `dtype`. A
    /// checkpoint with a missing, unexpected or mis-shaped tensor is refused, naming each.
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
        let config = UNetConfig::from_file(&dir.join("config.json"))?;
        let files = find_weight_files(dir, WEIGHTS_STEM, variant)?;
        let vb = Checkpoint::open(&files)?.var_builder(&unet_spec(&config)?, dtype, device)?;
        Ok(Self::new(&config, vb)?)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Time plus fps embedding, (B, time_embed_dim), not yet repeated per frame.
    pub fn embed_time(
        &self,
        timestep: f32,
        fps: f32,
        batch: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let dim = self.config.block_out_channels[0];
        let t = timestep_features(&vec![timestep; batch], dim, device)?.to_dtype(self.dtype)?;
        let f = timestep_features(&vec![fps; batch], dim, device)?.to_dtype(self.dtype)?;
        self.time_embedding.forward(&t)? + self.fps_embedding.forward(&f)?
    }

    /// Text tokens, frame-0 image-latent tokens and image-embedding tokens: (B, S, cross).
    pub fn context(&self, inputs: &UNetInputs) -> Result<Tensor> {
        let frame0 = inputs
            .image_latents
            .narrow(2, 0, 1)?
            .squeeze(2)?
            .to_dtype(self.dtype)?;
        let latent_tokens = self.image_latents_context_embedding.forward(&frame0)?;
        let image_tokens = self
            .context_embedding
            .forward(&inputs.image_embeddings.to_dtype(self.dtype)?)?;
        let text = inputs.encoder_hidden_states.to_dtype(self.dtype)?;
        Tensor::cat(&[&text, &latent_tokens, &image_tokens], 1)
    }

    /// Image latents through `image_latents_proj_in` and the temporal encoder, returned as
    /// (B, F, 4, h, w).
    pub fn encode_image_latents(&self, image_latents: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = image_latents.dims5()?;
        let per_frame = image_latents
            .to_dtype(self.dtype)?
            .permute((0, 2, 1, 3, 4))?
            .reshape((b * f, c, h, w))?;
        let x = self.image_latents_proj_in.forward(&per_frame)?;
        // (B, F, C, h, w) -> (B·h·w, F, C)
        let tokens = x
            .reshape((b, f, c, h, w))?
            .permute((0, 3, 4, 1, 2))?
            .reshape((b * h * w, f, c))?;
        let tokens = self.image_latents_temporal_encoder.forward(&tokens)?;
        tokens.reshape((b, h, w, f, c))?.permute((0, 3, 4, 1, 2))
    }

    /// The prediction for `inputs.sample`, shape (B, out_channels, F, h, w), in the model dtype.
    pub fn forward(&self, inputs: &UNetInputs) -> Result<Tensor> {
        let (b, _, frames, h, w) = inputs.sample.dims5()?;
        let device = inputs.sample.device();
        let _p = crate::nn::profile::scope("unet, other", device);

        let temb = repeat_interleave_rows(
            &self.embed_time(inputs.timestep, inputs.fps, b, device)?,
            frames,
        )?;
        let context = repeat_interleave_rows(&self.context(inputs)?, frames)?;

        let frame_chunk = inputs.options.conv_frame_chunk;
        // A block, so that the inputs and conv_in's output are freed once transformer_in has run.
        let mut x = {
            let sample = inputs
                .sample
                .to_dtype(self.dtype)?
                .permute((0, 2, 1, 3, 4))?;
            let image = self.encode_image_latents(inputs.image_latents)?;
            let x = Tensor::cat(&[&sample, &image], 2)?.reshape((b * frames, (), h, w))?;
            let x = per_frame_chunks(&x, frame_chunk, |x, _, _| self.conv_in.forward(x))?;
            self.transformer_in.forward(&x, frames, inputs.options)?
        };

        let block_inputs = BlockInputs {
            temb: &temb,
            context: &context,
            frames,
            opts: inputs.options,
        };
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, states) = block.forward(&x, block_inputs)?;
            x = out;
            skips.extend(states);
        }
        x = self.mid_block.forward(&x, block_inputs)?;

        // When h or w does not divide by the total upsampling factor, each upsampler is told the
        // size of the skip it will meet, as diffusers' `forward_upsample_size` does.
        let factor = 1usize << (self.up_blocks.len() - 1);
        let forced_sizes = h % factor != 0 || w % factor != 0;
        for block in &self.up_blocks {
            let rest = skips.len() - block.layers.len();
            let upsample_size = if forced_sizes && rest > 0 {
                let (_, _, sh, sw) = skips[rest - 1].dims4()?;
                Some((sh, sw))
            } else {
                None
            };
            x = block.forward(&x, &skips[rest..], block_inputs, upsample_size)?;
            skips.truncate(rest);
        }

        let x = per_frame_chunks(&x, frame_chunk, |x, _, _| {
            self.conv_out.forward(&self.conv_norm_out.forward_silu(x)?)
        })?;
        let (_, c_out, oh, ow) = x.dims4()?;
        x.reshape((b, frames, c_out, oh, ow))?
            .permute((0, 2, 1, 3, 4))
    }
}
