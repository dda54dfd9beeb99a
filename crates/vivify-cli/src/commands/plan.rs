//! `vivify plan`: the fastest execution plan whose predicted peak fits a memory budget, with each
//! stage's predicted peak. Nothing is downloaded or loaded: a hub id plans with the published
//! configs built into vivify, `tiny` with the built-in tiny model's, a directory with its
//! `*/config.json` files.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::Path;
use std::process::ExitCode;
use vivify_core::config::UNetConfig;
use vivify_core::memory::{
    Backend, ModelConfigs, PlanChoice, RequestShape, choose_plan, evaluate, parse_bytes,
};
use vivify_core::models::clip::{ClipTextConfig, ClipVisionConfig};
use vivify_core::models::vae::VaeConfig;
use vivify_core::pipeline::request;

/// Planning dtype. The default is f16: plans are made for GPUs, where vivify runs in half
/// precision (f32 would double every figure).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PlanDtype {
    F32,
    F16,
    Bf16,
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    /// `tiny`, a diffusers model directory (its config.json files are read), or a hub repo id
    /// (planned with the published I2VGen-XL configs; nothing is downloaded).
    #[arg(long, default_value = "ali-vilab/i2vgen-xl")]
    pub model: String,
    /// Video width in pixels (multiple of 8).
    #[arg(long, default_value_t = request::DEFAULT_WIDTH)]
    pub width: usize,
    /// Video height in pixels (multiple of 8).
    #[arg(long, default_value_t = request::DEFAULT_HEIGHT)]
    pub height: usize,
    #[arg(long, default_value_t = request::DEFAULT_FRAMES)]
    pub frames: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off (one UNet row).
    #[arg(long, default_value_t = request::DEFAULT_GUIDANCE, allow_negative_numbers = true)]
    pub guidance: f64,
    /// Compute dtype the plan is for.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: PlanDtype,
    /// Device memory to plan for: 8GiB, 512MiB, 24GB, or bytes.
    #[arg(long)]
    pub memory_budget: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Set one execution-plan choice by hand over the planner's, as `generate --plan` does
    /// (e.g. `--plan residency=staged`); the prediction is for the plan with it set.
    #[arg(long = "plan", value_name = "KEY=VALUE")]
    pub plan: Vec<String>,
}

fn dtype(d: PlanDtype) -> candle_core::DType {
    match d {
        PlanDtype::F32 => candle_core::DType::F32,
        PlanDtype::F16 => candle_core::DType::F16,
        PlanDtype::Bf16 => candle_core::DType::BF16,
    }
}

/// The configs `--model` names, without downloading anything.
pub fn model_configs(model: &str) -> Result<ModelConfigs> {
    if model == "tiny" {
        return Ok(vivify_core::weights::tiny_configs());
    }
    let dir = Path::new(model);
    if dir.is_dir() {
        let c = |part: &str| dir.join(part).join("config.json");
        let ctx = || format!("--model {model}");
        return Ok(ModelConfigs {
            unet: UNetConfig::from_file(&c("unet")).with_context(ctx)?,
            vae: VaeConfig::from_file(&c("vae")).with_context(ctx)?,
            text: ClipTextConfig::from_file(&c("text_encoder")).with_context(ctx)?,
            vision: ClipVisionConfig::from_file(&c("image_encoder")).with_context(ctx)?,
        });
    }
    Ok(ModelConfigs::i2vgen_xl())
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn opt(v: Option<usize>) -> String {
    v.map_or("all".into(), |v| v.to_string())
}

pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    let budget = parse_bytes(&args.memory_budget)?;
    let req = vivify_core::pipeline::request::GenerationRequest {
        width: args.width,
        height: args.height,
        frames: args.frames,
        guidance: args.guidance,
        ..vivify_core::pipeline::request::GenerationRequest::new(
            vivify_core::pipeline::pillow_resize::Rgb8::new(1, 1, vec![0; 3]),
            "",
        )
    };
    req.validate()?;
    let models = model_configs(&args.model)?;
    let shape = RequestShape {
        width: args.width,
        height: args.height,
        frames: args.frames,
        guidance: vivify_core::pipeline::denoise::uses_guidance(args.guidance),
        decode_chunk: 1,
    };
    let mut choice = choose_plan(&models, &shape, dtype(args.dtype), budget)?;
    if !args.plan.is_empty() {
        let mut plan = choice.plan;
        crate::plan_overrides::apply(&mut plan, &args.plan)?;
        let overridden = evaluate(
            &models,
            &shape,
            dtype(args.dtype),
            budget,
            Backend::Cuda,
            plan,
            choice.decode_chunk,
        )?;
        // what would fit stays the planner's answer when the plan set by hand does not
        let suggestion = choice.suggestion.filter(|_| !overridden.fits);
        choice = PlanChoice {
            suggestion,
            ..overridden
        };
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&choice))?);
    } else {
        print_table(args, &choice);
    }
    Ok(if choice.fits {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

pub fn to_json(c: &PlanChoice) -> serde_json::Value {
    let stages: serde_json::Map<String, serde_json::Value> = c
        .estimate
        .stages()
        .iter()
        .map(|(name, s)| {
            (
                name.replace(' ', "_"),
                serde_json::json!({
                    "peak_bytes": s.peak(),
                    "weights_bytes": s.weights,
                    "activations_bytes": s.activations,
                    "workspace_bytes": s.workspace,
                    "overhead_bytes": s.overhead,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "fits": c.fits,
        "predicted_peak_bytes": c.predicted_peak_bytes(),
        "budget_bytes": c.budget_bytes,
        "usable_bytes": vivify_core::memory::usable(c.budget_bytes),
        "slowdown": c.slowdown,
        "summary": c.summary(),
        "plan": c.plan,
        "decode_chunk": c.decode_chunk,
        "stages": stages,
        "weights_bytes": c.estimate.weights(),
        "suggestion": c.suggestion,
    })
}

fn print_table(args: &PlanArgs, c: &PlanChoice) {
    println!(
        "{}x{}, {} frames, guidance {}, {:?}, model {}",
        args.width, args.height, args.frames, args.guidance, args.dtype, args.model
    );
    println!(
        "budget {} ({} usable after the safety margin)",
        gib(c.budget_bytes),
        gib(vivify_core::memory::usable(c.budget_bytes))
    );
    println!(
        "{:<14} {:>11} {:>11} {:>11} {:>11}",
        "stage", "peak", "weights", "activations", "workspace"
    );
    for (name, s) in c.estimate.stages() {
        println!(
            "{:<14} {:>11} {:>11} {:>11} {:>11}",
            name,
            gib(s.peak()),
            gib(s.weights),
            gib(s.activations),
            gib(s.workspace)
        );
    }
    let p = c.plan.compute;
    println!(
        "plan: sequential guidance {}, attention query chunk {}, head slice {}, feed-forward chunk {}, spatial frame chunk {}, temporal pixel chunk {}, convolution frame chunk {}, VAE row band {}, decode chunk {}",
        c.plan.sequential_guidance,
        opt(p.attention_query_chunk),
        opt(p.attention_head_chunk),
        opt(p.feed_forward_chunk),
        opt(p.spatial_frame_chunk),
        opt(p.temporal_pixel_chunk),
        opt(p.conv_frame_chunk),
        opt(p.vae_row_band),
        c.decode_chunk
    );
    println!("weights: {}", c.plan.residency.words());
    println!(
        "predicted peak {}, expected slowdown {:.3}x",
        gib(c.predicted_peak_bytes()),
        c.slowdown
    );
    if c.fits {
        println!("fits");
    } else {
        println!("does not fit: the most frugal plan is shown");
        if let Some(s) = c.suggestion {
            match s.max_frames {
                Some(f) => println!("  at {}x{}: up to {f} frames fit", args.width, args.height),
                None => println!("  at {}x{}: no frame count fits", args.width, args.height),
            }
            match s.max_square_size {
                Some(x) => println!("  at {} frames: up to {x}x{x} fits", args.frames),
                None => println!("  at {} frames: no size fits", args.frames),
            }
        }
    }
}
