//! `AutoencoderKL`: the VAE that maps video frames to latents and back. State-dict names follow
//! diffusers so a published checkpoint loads unchanged.

pub mod blocks;
mod config;

pub use config::{VaeConfig, VaeDownBlockType, VaeUpBlockType};

use crate::models::unet::WEIGHTS_STEM;
use crate::nn::compute::ComputeOptions;
use crate::nn::conv::{Conv2d, conv2d};
use crate::nn::conv_cfg;
use crate::nn::norm::GroupNorm;
use crate::nn::row_bands::conv3x3_in_row_bands;
use crate::weights::{Checkpoint, TensorSpec, find_weight_files, spec_of};
use blocks::{DownEncoderBlock2D, MidBlock2D, UpDecoderBlock2D, VAE_NORM_EPS};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::path::Path;

/// diffusers clamps the posterior's log-variance to this range.
const LOGVAR_RANGE: (f64, f64) = (-30.0, 20.0);

/// Image (N, in_channels, H, W) -> posterior parameters (N, 2·latent_channels, H/f, W/f).
#[derive(Debug, Clone)]
pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownEncoderBlock2D>,
    pub mid_block: MidBlock2D,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Encoder {
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let ch = &config.block_out_channels;
        let groups = config.norm_num_groups;
        let n = ch.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut c_out = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let c_in = c_out;
            c_out = c;
            down_blocks.push(DownEncoderBlock2D::new(
                vb.pp("down_blocks").pp(i),
                c_in,
                c_out,
                config.layers_per_block,
                groups,
                i + 1 < n,
            )?);
        }
        let last = ch[n - 1];
        Ok(Self {
            conv_in: conv2d(
                config.in_channels,
                ch[0],
                3,
                conv_cfg(1, 1),
                vb.pp("conv_in"),
            )?,
            down_blocks,
            mid_block: MidBlock2D::new(
                vb.pp("mid_block"),
                last,
                groups,
                config.mid_block_add_attention,
            )?,
            conv_norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, last, VAE_NORM_EPS)?,
            // double_z: mean and log-variance.
            conv_out: conv2d(
                last,
                2 * config.latent_channels,
                3,
                conv_cfg(1, 1),
                vb.pp("conv_out"),
            )?,
        })
    }
}

impl Module for Encoder {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, ComputeOptions::default())
    }
}

impl Encoder {
    /// `forward` with the mid-block attention chunked and, given `opts.vae_row_band`, the down
    /// blocks' resnets in bands of that many rows (see `nn::row_bands`).
    pub fn forward_with(&self, x: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        let mut x = self.conv_in.forward(x)?;
        for block in &self.down_blocks {
            x = match opts.vae_row_band {
                Some(band) => block.forward_in_row_bands(&x, band)?,
                None => block.forward(&x)?,
            };
        }
        let x = self.mid_block.forward_chunked(&x, opts)?;
        self.conv_out.forward(&self.conv_norm_out.forward_silu(&x)?)
    }
}

/// Latents (N, latent_channels, h, w) -> image (N, out_channels, h·f, w·f).
#[derive(Debug, Clone)]
pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock2D,
    pub up_blocks: Vec<UpDecoderBlock2D>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
}

impl Decoder {
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        let reversed: Vec<usize> = config.block_out_channels.iter().rev().copied().collect();
        let groups = config.norm_num_groups;
        let n = reversed.len();
        let mut up_blocks = Vec::with_capacity(n);
        let mut c_out = reversed[0];
        for (i, &c) in reversed.iter().enumerate() {
            let c_in = c_out;
            c_out = c;
            up_blocks.push(UpDecoderBlock2D::new(
                vb.pp("up_blocks").pp(i),
                c_in,
                c_out,
                config.layers_per_block + 1,
                groups,
                i + 1 < n,
            )?);
        }
        let first = config.block_out_channels[0];
        Ok(Self {
            conv_in: conv2d(
                config.latent_channels,
                reversed[0],
                3,
                conv_cfg(1, 1),
                vb.pp("conv_in"),
            )?,
            mid_block: MidBlock2D::new(
                vb.pp("mid_block"),
                reversed[0],
                groups,
                config.mid_block_add_attention,
            )?,
            up_blocks,
            conv_norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, first, VAE_NORM_EPS)?,
            conv_out: conv2d(
                first,
                config.out_channels,
                3,
                conv_cfg(1, 1),
                vb.pp("conv_out"),
            )?,
        })
    }
}

impl Module for Decoder {
    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        self.forward_with(z, ComputeOptions::default())
    }
}

impl Decoder {
    /// `forward` with the mid-block attention chunked and, given `opts.vae_row_band`, the up
    /// blocks and output layers run in bands of that many rows (see `nn::row_bands`).
    pub fn forward_with(&self, z: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        let mut x = self
            .mid_block
            .forward_chunked(&self.conv_in.forward(z)?, opts)?;
        let Some(band) = opts.vae_row_band else {
            for block in &self.up_blocks {
                x = block.forward(&x)?;
            }
            return self
                .conv_out
                .forward(&self.conv_norm_out.forward(&x)?.silu()?);
        };
        for block in &self.up_blocks {
            x = block.forward_in_row_bands(&x, band)?;
        }
        let stats = self.conv_norm_out.stats_in_row_bands(&x, band)?;
        conv3x3_in_row_bands(&self.conv_out, &x, band, |t| {
            self.conv_norm_out.apply_stats(t, &stats)?.silu()
        })
    }
}

#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    pub config: VaeConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub quant_conv: Option<Conv2d>,
    pub post_quant_conv: Option<Conv2d>,
    dtype: DType,
}

impl AutoencoderKL {
    pub fn new(config: &VaeConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let l = config.latent_channels;
        let quant_conv = if config.use_quant_conv {
            Some(conv2d(
                2 * l,
                2 * l,
                1,
                conv_cfg(1, 0),
                vb.pp("quant_conv"),
            )?)
        } else {
            None
        };
        let post_quant_conv = if config.use_post_quant_conv {
            Some(conv2d(l, l, 1, conv_cfg(1, 0), vb.pp("post_quant_conv"))?)
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            encoder: Encoder::new(config, vb.pp("encoder"))?,
            decoder: Decoder::new(config, vb.pp("decoder"))?,
            quant_conv,
            post_quant_conv,
            dtype: vb.dtype(),
        })
    }

    /// The tensors (names and shapes) the VAE reads for `config`.
    pub fn spec(config: &VaeConfig) -> Result<Vec<TensorSpec>> {
        spec_of(|vb| Self::new(config, vb))
    }

    /// Loads `config.json` and the weights from a diffusers `vae/` directory, preferring the
    /// `variant` file (e.g. `fp16`) when present, computing in `dtype`. A checkpoint with a
    /// missing, unexpected or mis-shaped tensor is refused, naming each.
    pub fn load(
        dir: &Path,
        variant: Option<&str>,
        dtype: DType,
        device: &Device,
    ) -> crate::Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
        let config = VaeConfig::from_file(&dir.join("config.json"))?;
        let files = find_weight_files(dir, WEIGHTS_STEM, variant)?;
        let vb = Checkpoint::open(&files)?.var_builder(&Self::spec(&config)?, dtype, device)?;
        Ok(Self::new(&config, vb)?)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The factor the pipeline multiplies encoded latents by (and divides by before decoding).
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    fn check_input(&self, x: &Tensor, channels: usize, what: &str) -> Result<()> {
        let (n, c, h, w) = x.dims4()?;
        if c != channels || n == 0 || h == 0 || w == 0 {
            candle_core::bail!(
                "AutoencoderKL::{what}: expected (N, {channels}, H, W) with N, H, W > 0, got {:?}",
                x.dims()
            );
        }
        Ok(())
    }

    /// The posterior's mean and clamped log-variance, each (N, latent_channels, H/f, W/f), for
    /// images (N, in_channels, H, W) in [-1, 1].
    pub fn encode_posterior(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        self.encode_posterior_with(x, ComputeOptions::default())
    }

    /// `encode_posterior` with the encoder run as `opts` says (VAE row bands, attention chunks).
    pub fn encode_posterior_with(
        &self,
        x: &Tensor,
        opts: ComputeOptions,
    ) -> Result<(Tensor, Tensor)> {
        self.check_input(x, self.config.in_channels, "encode")?;
        let mut h = self.encoder.forward_with(&x.to_dtype(self.dtype)?, opts)?;
        if let Some(q) = &self.quant_conv {
            h = q.forward(&h)?;
        }
        let l = self.config.latent_channels;
        let mean = h.narrow(1, 0, l)?;
        let logvar = h.narrow(1, l, l)?.clamp(LOGVAR_RANGE.0, LOGVAR_RANGE.1)?;
        Ok((mean, logvar))
    }

    /// The posterior mean, unscaled: the first `latent_channels` channels of quant_conv's output.
    ///
    /// diffusers' I2VGenXLPipeline draws a sample (mean + std · noise) instead. vivify uses the
    /// mean, the centre that sample scatters around, so the image latents depend on the image
    /// alone: no second noise stream (which could not match torch's generator anyway) and the
    /// same latents on every device and seed.
    pub fn encode_mean(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.encode_posterior(x)?.0)
    }

    /// `encode_mean` with the encoder run as `opts` says.
    pub fn encode_mean_with(&self, x: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        Ok(self.encode_posterior_with(x, opts)?.0)
    }

    /// Latents (N, latent_channels, h, w), already divided by the scaling factor, to images
    /// (N, out_channels, h·f, w·f).
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_with(z, ComputeOptions::default())
    }

    /// `decode` with the decoder run as `opts` says (VAE row bands, attention chunks).
    pub fn decode_with(&self, z: &Tensor, opts: ComputeOptions) -> Result<Tensor> {
        self.check_input(z, self.config.latent_channels, "decode")?;
        let z = z.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(p) => p.forward(&z)?,
            None => z,
        };
        self.decoder.forward_with(&z, opts)
    }

    /// `decode` over at most `frames_per_chunk` rows at a time, concatenated: the same numbers
    /// (every layer works per row), with peak memory bounded by the chunk, not the video.
    pub fn decode_chunked(&self, z: &Tensor, frames_per_chunk: usize) -> Result<Tensor> {
        if frames_per_chunk == 0 {
            candle_core::bail!(
                "AutoencoderKL::decode_chunked: frames_per_chunk must be at least 1"
            );
        }
        self.check_input(z, self.config.latent_channels, "decode")?;
        let n = z.dim(0)?;
        if frames_per_chunk >= n {
            return self.decode(z);
        }
        let chunks = (0..n)
            .step_by(frames_per_chunk)
            .map(|start| self.decode(&z.narrow(0, start, frames_per_chunk.min(n - start))?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::cat(&chunks, 0)
    }
}
