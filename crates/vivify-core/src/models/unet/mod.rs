//! `I2VGenXLUNet`: the denoiser. State-dict names follow diffusers so a published checkpoint
//! loads unchanged.

pub mod blocks;
pub mod image_latents;
pub mod streaming;

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

/// The UNet's parts outside its down, mid and up blocks: embeddings, the image-latent branch,
/// conv_in/transformer_in and the output layers. Small next to the blocks, so a streamed UNet
/// keeps them resident.
#[derive(Debug, Clone)]
pub struct UNetTrunk {
    pub config: UNetConfig,
    pub time_embedding: TimestepEmbedding,
    pub fps_embedding: TimestepEmbedding,
    pub context_embedding: ImageEmbeddingProjection,
    pub image_latents_context_embedding: ContextEmbedding,
    pub image_latents_proj_in: ProjIn,
    pub image_latents_temporal_encoder: TemporalEncoder,
    pub conv_in: Conv2d,
    pub transformer_in: TransformerTemporalModel,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    dtype: DType,
}

/// The whole UNet, every block resident. Derefs to its trunk, so `unet.config`,
/// `unet.conv_in` and the trunk's methods read as before the split.
#[derive(Debug, Clone)]
pub struct I2VGenXLUNet {
    pub trunk: UNetTrunk,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
}

impl std::ops::Deref for I2VGenXLUNet {
    type Target = UNetTrunk;
    fn deref(&self) -> &UNetTrunk {
        &self.trunk
    }
}

/// A UNet block, named by its place in a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockId {
    Down(usize),
    Mid,
    Up(usize),
}

impl BlockId {
    /// Every block of `config`, in the order a forward pass runs them.
    pub fn all(config: &UNetConfig) -> Vec<BlockId> {
        let n = config.block_out_channels.len();
        (0..n)
            .map(BlockId::Down)
            .chain([BlockId::Mid])
            .chain((0..n).map(BlockId::Up))
            .collect()
    }

    /// The state-dict prefix of the block's weights (`down_blocks.0.`, `mid_block.`, ...).
    pub fn prefix(self) -> String {
        match self {
            BlockId::Down(i) => format!("down_blocks.{i}."),
            BlockId::Mid => "mid_block.".into(),
            BlockId::Up(i) => format!("up_blocks.{i}."),
        }
    }
}

/// One block, owned (what a streamer materialises).
#[derive(Debug, Clone)]
pub enum UNetBlock {
    Down(DownBlock),
    /// Boxed: the mid block's two transformers make it far larger than the others' vectors.
    Mid(Box<MidBlock>),
    Up(UpBlock),
}

/// One block, borrowed.
#[derive(Debug, Clone, Copy)]
pub enum BlockRef<'a> {
    Down(&'a DownBlock),
    Mid(&'a MidBlock),
    Up(&'a UpBlock),
}

impl UNetBlock {
    /// Block `id` of `config`, its weights read from `vb` (the UNet's root builder): only that
    /// block's tensors are loaded.
    pub fn new(config: &UNetConfig, id: BlockId, vb: &VarBuilder) -> Result<Self> {
        let ch = &config.block_out_channels;
        let n = ch.len();
        let shape = BlockShape {
            temb_channels: config.time_embed_dim(),
            groups: config.norm_num_groups,
            head_dim: config.attention_head_dim,
            cross_attention_dim: config.cross_attention_dim,
        };
        Ok(match id {
            BlockId::Down(i) => UNetBlock::Down(DownBlock::new(
                vb.pp("down_blocks").pp(i),
                ch[i.saturating_sub(1)],
                ch[i],
                config.layers_per_block,
                shape,
                config.down_block_types[i] == DownBlockType::CrossAttnDownBlock3D,
                i + 1 < n,
            )?),
            BlockId::Mid => UNetBlock::Mid(Box::new(MidBlock::new(
                vb.pp("mid_block"),
                ch[n - 1],
                shape,
            )?)),
            BlockId::Up(i) => {
                let reversed: Vec<usize> = ch.iter().rev().copied().collect();
                UNetBlock::Up(UpBlock::new(
                    vb.pp("up_blocks").pp(i),
                    UpChannels {
                        input: reversed[(i + 1).min(n - 1)],
                        output: reversed[i],
                        prev_output: reversed[i.saturating_sub(1)],
                    },
                    config.layers_per_block + 1,
                    shape,
                    config.up_block_types[i] == UpBlockType::CrossAttnUpBlock3D,
                    i + 1 < n,
                )?)
            }
        })
    }

    pub fn view(&self) -> BlockRef<'_> {
        match self {
            UNetBlock::Down(b) => BlockRef::Down(b),
            UNetBlock::Mid(b) => BlockRef::Mid(b),
            UNetBlock::Up(b) => BlockRef::Up(b),
        }
    }
}

impl<'a> BlockRef<'a> {
    fn down(self) -> Result<&'a DownBlock> {
        match self {
            BlockRef::Down(b) => Ok(b),
            _ => candle_core::bail!("expected a down block"),
        }
    }
    fn mid(self) -> Result<&'a MidBlock> {
        match self {
            BlockRef::Mid(b) => Ok(b),
            _ => candle_core::bail!("expected the mid block"),
        }
    }
    fn up(self) -> Result<&'a UpBlock> {
        match self {
            BlockRef::Up(b) => Ok(b),
            _ => candle_core::bail!("expected an up block"),
        }
    }
}

/// A block as a [`BlockSource`] hands it out: borrowed from a resident UNet, or shared with a
/// streamer's window.
pub enum BlockHandle<'a> {
    Borrowed(BlockRef<'a>),
    Shared(std::sync::Arc<UNetBlock>),
}

impl BlockHandle<'_> {
    pub fn get(&self) -> BlockRef<'_> {
        match self {
            BlockHandle::Borrowed(b) => *b,
            BlockHandle::Shared(b) => b.view(),
        }
    }
}

/// Where a forward pass gets its blocks.
pub trait BlockSource {
    /// Block `id`, on the device while the handle lives.
    fn block(&self, id: BlockId) -> Result<BlockHandle<'_>>;
    /// Block `id` has run (its handle is dropped): a streamer may free it.
    fn done(&self, _id: BlockId) -> Result<()> {
        Ok(())
    }
}

impl BlockSource for I2VGenXLUNet {
    fn block(&self, id: BlockId) -> Result<BlockHandle<'_>> {
        let missing = || candle_core::Error::Msg(format!("the UNet has no block {id:?}"));
        Ok(BlockHandle::Borrowed(match id {
            BlockId::Down(i) => BlockRef::Down(self.down_blocks.get(i).ok_or_else(missing)?),
            BlockId::Mid => BlockRef::Mid(&self.mid_block),
            BlockId::Up(i) => BlockRef::Up(self.up_blocks.get(i).ok_or_else(missing)?),
        }))
    }
}

/// A UNet the denoiser can run: resident or streamed.
pub trait UNetModel {
    /// The prediction for `inputs.sample`, (B, out_channels, F, h, w), in the model dtype.
    fn forward(&self, inputs: &UNetInputs) -> Result<Tensor>;
}

impl UNetModel for I2VGenXLUNet {
    fn forward(&self, inputs: &UNetInputs) -> Result<Tensor> {
        I2VGenXLUNet::forward(self, inputs)
    }
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
        let trunk = UNetTrunk::new(config, &vb)?;
        let mut down_blocks = Vec::new();
        let mut mid_block = None;
        let mut up_blocks = Vec::new();
        for id in BlockId::all(config) {
            match UNetBlock::new(config, id, &vb)? {
                UNetBlock::Down(b) => down_blocks.push(b),
                UNetBlock::Mid(b) => mid_block = Some(*b),
                UNetBlock::Up(b) => up_blocks.push(b),
            }
        }
        Ok(Self {
            trunk,
            down_blocks,
            mid_block: mid_block.ok_or_else(|| candle_core::Error::Msg("no mid block".into()))?,
            up_blocks,
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
        let (config, vb) = open_checkpoint(dir, variant, dtype, device)?;
        Ok(Self::new(&config, vb)?)
    }

    /// The prediction for `inputs.sample`, shape (B, out_channels, F, h, w), in the model dtype.
    pub fn forward(&self, inputs: &UNetInputs) -> Result<Tensor> {
        self.trunk.forward_with(inputs, self)
    }
}

/// The config of a diffusers UNet directory and a builder over its (memory-mapped) weights on
/// `device`, checked against the config's tensor list: nothing is read until a tensor is asked
/// for.
pub fn open_checkpoint(
    dir: &Path,
    variant: Option<&str>,
    dtype: DType,
    device: &Device,
) -> crate::Result<(UNetConfig, VarBuilder<'static>)> {
    crate::device::check_compute_dtype(dtype, device)?;
    let config = UNetConfig::from_file(&dir.join("config.json"))?;
    let files = find_weight_files(dir, WEIGHTS_STEM, variant)?;
    let vb = Checkpoint::open(&files)?.var_builder(&unet_spec(&config)?, dtype, device)?;
    Ok((config, vb))
}

impl UNetTrunk {
    /// The trunk of `config`, reading only its own tensors from `vb`.
    pub fn new(config: &UNetConfig, vb: &VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let ch = &config.block_out_channels;
        let c = config.in_channels;
        let groups = config.norm_num_groups;
        let cross = config.cross_attention_dim;
        let temb = config.time_embed_dim();
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

    /// The forward pass around blocks from `blocks`: each is fetched just before it runs and
    /// reported done just after, so a streamer holds only its window of them.
    pub fn forward_with(&self, inputs: &UNetInputs, blocks: &dyn BlockSource) -> Result<Tensor> {
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
        let n = self.config.block_out_channels.len();
        let mut skips = vec![x.clone()];
        for i in 0..n {
            let block = blocks.block(BlockId::Down(i))?;
            let (out, states) = block.get().down()?.forward(&x, block_inputs)?;
            drop(block);
            blocks.done(BlockId::Down(i))?;
            x = out;
            skips.extend(states);
        }
        let block = blocks.block(BlockId::Mid)?;
        x = block.get().mid()?.forward(&x, block_inputs)?;
        drop(block);
        blocks.done(BlockId::Mid)?;

        // When h or w does not divide by the total upsampling factor, each upsampler is told the
        // size of the skip it will meet, as diffusers' `forward_upsample_size` does.
        let factor = 1usize << (n - 1);
        let forced_sizes = h % factor != 0 || w % factor != 0;
        for i in 0..n {
            let handle = blocks.block(BlockId::Up(i))?;
            let block = handle.get().up()?;
            let rest = skips.len() - block.layers.len();
            let upsample_size = if forced_sizes && rest > 0 {
                let (_, _, sh, sw) = skips[rest - 1].dims4()?;
                Some((sh, sw))
            } else {
                None
            };
            x = block.forward(&x, &skips[rest..], block_inputs, upsample_size)?;
            drop(handle);
            blocks.done(BlockId::Up(i))?;
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
