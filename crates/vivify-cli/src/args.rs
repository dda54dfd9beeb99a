//! Flags of every subcommand.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use vivify_core::pipeline::request;

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
    /// Generate a video from an image and a prompt.
    Generate(Box<GenerateArgs>),
    /// Predict each stage's memory and choose the fastest plan that fits a budget.
    Plan(crate::commands::plan::PlanArgs),
    /// Show the device, the model, and what fits in the device's free memory at the usual sizes.
    Doctor(crate::commands::doctor::DoctorArgs),
    /// Serve the web page and HTTP API on 127.0.0.1:7860 (jobs queued, run one at a time).
    Serve(Box<crate::commands::serve::ServeArgs>),
    /// Download a hub model into the Hugging Face cache and print where it is.
    Download(DownloadArgs),
    /// Time UNet forward passes at a given config and size (used by bench/).
    BenchUnet(BenchUnetArgs),
    /// Time convolutions and attention at the UNet's and VAE's shapes (used by bench/gpu).
    #[command(hide = true)]
    BenchOps(BenchOpsArgs),
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
    /// `auto` (the first GPU in a CUDA build that finds one, else the CPU), `cpu`, or `cuda` /
    /// `cuda:N` in a build with the cuda feature.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Compute dtype; default f16 on CUDA, f32 on the CPU.
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
}

impl DeviceArgs {
    /// The device and the compute dtype to run on.
    pub fn resolve(&self) -> anyhow::Result<(candle_core::Device, candle_core::DType)> {
        let device = crate::model::parse_device(&self.device)?;
        let dtype = match (self.dtype, &device) {
            (Some(d), _) => d.dtype(),
            (None, candle_core::Device::Cpu) => candle_core::DType::F32,
            (None, _) => candle_core::DType::F16,
        };
        Ok((device, dtype))
    }
}

/// How a device is named in reports: `cpu` or `cuda:N`.
pub fn device_label(device: &candle_core::Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Where the model comes from.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// `tiny` (built in, no download), a diffusers model directory, or a Hugging Face hub repo id
    /// (downloaded into the Hugging Face cache, fp16 variant when the repo has one).
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Hub branch, tag or commit.
    #[arg(long, default_value = "main")]
    pub revision: String,
    /// Use only the local Hugging Face cache (also HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

/// The published model.
pub const DEFAULT_MODEL: &str = "ali-vilab/i2vgen-xl";

#[derive(Args, Debug)]
pub struct DownloadArgs {
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The still image to animate (JPEG, PNG or WebP).
    #[arg(long)]
    pub image: PathBuf,
    #[arg(long)]
    pub prompt: String,
    /// What guidance steers away from (default: empty).
    #[arg(long, default_value = "")]
    pub negative_prompt: String,
    /// Video width in pixels (multiple of 8).
    #[arg(long, default_value_t = request::DEFAULT_WIDTH)]
    pub width: usize,
    /// Video height in pixels (multiple of 8).
    #[arg(long, default_value_t = request::DEFAULT_HEIGHT)]
    pub height: usize,
    #[arg(long, default_value_t = request::DEFAULT_FRAMES)]
    pub frames: usize,
    #[arg(long, default_value_t = request::DEFAULT_STEPS)]
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    #[arg(long, default_value_t = request::DEFAULT_GUIDANCE, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Frames per second: the model's fps conditioning and the playback rate of the file.
    #[arg(long, default_value_t = request::DEFAULT_FPS)]
    pub fps: u32,
    /// Playback rate of the written file only (e.g. 12.5); the model's conditioning stays --fps.
    #[arg(long)]
    pub playback_fps: Option<f64>,
    /// Seed of the initial noise (ignored with --latents).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Initial noise: safetensors with tensor `latents` of shape (1, 4, frames, height/8, width/8).
    #[arg(long)]
    pub latents: Option<PathBuf>,
    /// `out.mp4` (H.264), `out.gif`, or any other path: a directory of 0000.png, 0001.png, ...
    /// A JSON sidecar goes beside it (`out.mp4.json`, `out.gif.json`, `DIR/metadata.json`).
    #[arg(long)]
    pub output: PathBuf,
    /// MP4 quality: H.264 quantiser, 0 (best, largest) to 51 (worst, smallest).
    #[arg(long, default_value_t = vivify_video::DEFAULT_QUALITY,
          value_parser = clap::value_parser!(u8).range(0..=51))]
    pub quality: u8,
    /// Floyd-Steinberg dithering for GIF output (smoother gradients, larger files).
    #[arg(long)]
    pub gif_dither: bool,
    /// Also write the final latents before decoding (safetensors, tensor `latents`).
    #[arg(long)]
    pub output_latents: Option<PathBuf>,
    /// Frames per VAE decode call (default: the planner's choice).
    #[arg(long)]
    pub decode_chunk: Option<usize>,
    /// Memory the run plans for: 8GiB, 512MiB, 24GB, or bytes (default: the device's free
    /// memory at start less 10%; on the CPU, MemAvailable).
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<String>,
    /// Set one execution-plan choice by hand over the planner's, e.g.
    /// `--plan attention-query-chunk=1024` (repeatable; keys: attention-query-chunk,
    /// attention-head-chunk, ff-chunk, frame-chunk, pixel-chunk, conv-frame-chunk, vae-row-band,
    /// sequential-guidance, residency=all|staged|streamed[:N]).
    #[arg(long = "plan", value_name = "KEY=VALUE")]
    pub plan: Vec<String>,
    /// Finish a run from the checkpoint an out-of-memory failure saved (give the same --image).
    #[arg(long, value_name = "FILE")]
    pub resume: Option<PathBuf>,
    /// Where a run that runs out of memory for good saves its latents (default: beside --output).
    #[arg(long, value_name = "DIR")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Testing aid: denoising runs out of memory until its plan is this many rungs down its
    /// ladder (a simulated memory budget, for CPU runs).
    #[arg(long, hide = true, value_name = "RUNGS")]
    pub simulate_denoise_oom: Option<usize>,
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

#[derive(Args, Debug)]
pub struct BenchOpsArgs {
    /// Timed calls per case after one warm-up (the best is reported).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    #[command(flatten)]
    pub device: DeviceArgs,
}
