//! Flags of every subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "vivify",
    version,
    args_override_self = true,
    about = "Image-to-video with I2VGen-XL that plans around your GPU's memory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a diffusers model directory: lists every missing, unexpected or mis-shaped tensor.
    CheckModel(CheckModelArgs),
    /// Run the denoising stage alone (UNet + DDIM with guidance) and write the final latents.
    Denoise(DenoiseArgs),
    /// Time UNet forward passes at a given config and size (used by bench/).
    BenchUnet(BenchUnetArgs),
}

#[derive(Args, Debug)]
pub struct CheckModelArgs {
    /// Model directory in the diffusers layout (with model_index.json, or a component directory).
    pub path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    F32,
    F16,
    Bf16,
}

impl DtypeArg {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            Self::F32 => candle_core::DType::F32,
            Self::F16 => candle_core::DType::F16,
            Self::Bf16 => candle_core::DType::BF16,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DeviceArgs {
    /// `cpu`, or `cuda` / `cuda:N` in a build with the cuda feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: DtypeArg,
}

#[derive(Args, Debug)]
pub struct DenoiseArgs {
    /// `tiny` (built in, no download) or a diffusers model directory.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Video width in pixels (multiple of 8).
    #[arg(long, default_value_t = 1280)]
    pub width: usize,
    /// Video height in pixels (multiple of 8).
    #[arg(long, default_value_t = 704)]
    pub height: usize,
    #[arg(long, default_value_t = 16)]
    pub frames: usize,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    #[arg(long, default_value_t = 9.0)]
    pub guidance: f64,
    /// Frames-per-second conditioning of the model.
    #[arg(long, default_value_t = 16.0)]
    pub fps: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Initial noise: safetensors with tensor `latents` of shape (1, 4, frames, height/8, width/8).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// Where to write the final latents (safetensors, tensor `latents`).
    #[arg(long)]
    pub output_latents: PathBuf,
    #[command(flatten)]
    pub device: DeviceArgs,
}

#[derive(Args, Debug)]
pub struct BenchUnetArgs {
    /// UNet config.json (diffusers format); random weights are made for it.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, default_value_t = 256)]
    pub width: usize,
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    #[arg(long, default_value_t = 8)]
    pub frames: usize,
    /// Batch rows per forward (2 = one guided step).
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Timed forwards after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub iters: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}
