//! `vivify doctor`: the device found, the model in use (configs only, no weights loaded), and
//! what fits in the device's free memory at the usual sizes, each with its plan and predicted
//! time factor.

use crate::args::DtypeArg;
use crate::commands::plan::model_configs;
use crate::device_facts::{CpuFacts, CudaFacts, cpu_facts, cuda_facts};
use crate::model::parse_device;
use anyhow::Result;
use candle_core::Device;
use clap::Args;
use std::process::ExitCode;
use vivify_core::memory::available::{auto_budget, free_bytes};
use vivify_core::memory::{Backend, PlanChoice, RequestShape, choose_plan_on, parse_bytes};

/// The sizes people ask for most: (width, height, frames).
pub const PRESETS: [(usize, usize, usize); 4] = [
    (512, 512, 16),
    (768, 768, 24),
    (1280, 704, 16),
    (1024, 1024, 32),
];

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// `tiny`, a diffusers model directory (its config.json files are read), or a hub repo id
    /// (the published I2VGen-XL configs; nothing is downloaded).
    #[arg(long, default_value = crate::args::DEFAULT_MODEL)]
    pub model: String,
    /// `cpu`, or `cuda` / `cuda:N` in a build with the cuda feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Compute dtype of the table (default: f32 on the CPU, f16 on CUDA).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Plan for this much memory instead of the device's free memory.
    #[arg(long, value_name = "SIZE")]
    pub memory_budget: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn cuda_ordinal(spec: &str) -> Option<usize> {
    match spec {
        "cuda" => Some(0),
        s => s.strip_prefix("cuda:")?.parse().ok(),
    }
}

pub fn run(args: &DoctorArgs) -> Result<ExitCode> {
    let cpu = cpu_facts();
    let cuda = cuda_facts(
        cuda_ordinal(&args.device).unwrap_or(0),
        args.device != "cpu",
    );
    // A CUDA device that does not open is reported, not an error: that is what doctor is for.
    let device = parse_device(&args.device).ok();
    let on_cpu = matches!(device, Some(Device::Cpu));
    let dtype = args
        .dtype
        .unwrap_or(if on_cpu { DtypeArg::F32 } else { DtypeArg::F16 });
    let free = device.as_ref().and_then(free_bytes);
    let budget = match &args.memory_budget {
        Some(text) => Some(parse_bytes(text)?),
        None => free.map(auto_budget),
    };
    let models = model_configs(&args.model)?;
    let weights = vivify_core::memory::model_weights(&models, dtype.dtype())?;
    let weight_bytes = weights.unet + weights.vae + weights.text + weights.vision;
    let backend = if on_cpu { Backend::Cpu } else { Backend::Cuda };
    let rows: Vec<((usize, usize, usize), PlanChoice)> = match budget {
        Some(budget) => PRESETS
            .iter()
            .map(|&(w, h, f)| {
                let shape = RequestShape {
                    width: w,
                    height: h,
                    frames: f,
                    guidance: true,
                    decode_chunk: 1,
                };
                Ok((
                    (w, h, f),
                    choose_plan_on(&models, &shape, dtype.dtype(), budget, backend)?,
                ))
            })
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    if args.json {
        let json = serde_json::json!({
            "device": args.device,
            "device_opens": device.is_some(),
            "cpu": cpu.to_json(),
            "cuda": cuda.to_json(),
            "free_bytes": free,
            "budget_bytes": budget,
            "dtype": format!("{dtype:?}").to_lowercase(),
            "model": args.model,
            "weights_bytes": weight_bytes,
            "presets": rows.iter().map(|((w, h, f), c)| serde_json::json!({
                "width": w, "height": h, "frames": f,
                "fits": c.fits,
                "plan": c.summary(),
                "predicted_peak_bytes": c.predicted_peak_bytes(),
                "slowdown": c.slowdown,
                "suggestion": c.suggestion,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_device(args, &cpu, &cuda, device.is_some());
        println!(
            "model: {} ({} of weights at {dtype:?}; configs only, nothing loaded)",
            args.model,
            gib(weight_bytes)
        );
        match budget {
            None => println!(
                "budget: free memory of {} unknown; give --memory-budget for the table",
                args.device
            ),
            Some(b) => {
                let from = if args.memory_budget.is_some() {
                    "--memory-budget".to_string()
                } else {
                    format!("free memory {} less 10%", gib(free.unwrap_or(0)))
                };
                println!("budget: {} ({from})", gib(b));
                print_table(&rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_device(args: &DoctorArgs, cpu: &CpuFacts, cuda: &CudaFacts, opens: bool) {
    let mem = cpu.memory.map_or("RAM unknown".into(), |m| {
        format!(
            "RAM {} total, {} available",
            gib(m.total_bytes),
            gib(m.available_bytes)
        )
    });
    println!(
        "cpu: {} ({} threads; avx {}, f16c {}, mkl {}), {mem}",
        cpu.model.as_deref().unwrap_or("unknown model"),
        cpu.threads,
        cpu.avx,
        cpu.f16c,
        cpu.mkl
    );
    println!(
        "cuda: {}{}",
        cuda.note,
        match cuda.device_opens {
            Some(true) => format!("; {} opens", args.device),
            Some(false) => format!("; {} does not open", args.device),
            None => String::new(),
        }
    );
    println!(
        "device: {}{}",
        args.device,
        if opens { "" } else { " (not available)" }
    );
}

fn print_table(rows: &[((usize, usize, usize), PlanChoice)]) {
    println!(
        "{:<14} {:<5} {:>14} {:>9}  plan",
        "size", "fits", "predicted peak", "time"
    );
    for ((w, h, f), c) in rows {
        let fits = if c.fits { "yes" } else { "no" };
        let mut plan = c.summary();
        if let Some(s) = c.suggestion {
            plan.push_str(&format!(
                " (most frugal; fits: {} frames, {} square)",
                s.max_frames.map_or("no".into(), |v| format!("≤{v}")),
                s.max_square_size.map_or("no".into(), |v| format!("≤{v}²"))
            ));
        }
        println!(
            "{:<14} {:<5} {:>14} {:>8.2}x  {plan}",
            format!("{w}x{h}x{f}"),
            fits,
            gib(c.predicted_peak_bytes()),
            c.slowdown
        );
    }
}
