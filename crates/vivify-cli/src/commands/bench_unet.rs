//! `vivify bench-unet`: seconds per UNet forward at a given config and size, random weights.

use crate::args::BenchUnetArgs;
use anyhow::Result;
use candle_core::Tensor;
use std::process::ExitCode;
use std::time::Instant;
use vivify_core::config::UNetConfig;
use vivify_core::models::unet::UNetInputs;
use vivify_core::weights::{TensorSpec, random_unet, unet_spec};

pub fn run(args: &BenchUnetArgs) -> Result<ExitCode> {
    if args.iters == 0 {
        anyhow::bail!("--iters must be at least 1");
    }
    let (device, dtype) = args.device.resolve()?;
    let config = UNetConfig::from_file(&args.config)?;
    let params: usize = unet_spec(&config)?.iter().map(TensorSpec::numel).sum();
    let unet = random_unet(&config, 0, dtype, &device)?;

    let (b, f, h, w) = (args.batch, args.frames, args.height / 8, args.width / 8);
    let cross = config.cross_attention_dim;
    let sample = Tensor::randn(0f32, 1., (b, 4, f, h, w), &device)?.to_dtype(dtype)?;
    let image_latents = Tensor::randn(0f32, 1., (b, 4, f, h, w), &device)?.to_dtype(dtype)?;
    let image_embeddings = Tensor::randn(0f32, 1., (b, cross), &device)?.to_dtype(dtype)?;
    let text = Tensor::randn(0f32, 1., (b, 77, cross), &device)?.to_dtype(dtype)?;
    let inputs = UNetInputs {
        sample: &sample,
        timestep: 500.0,
        fps: 16.0,
        image_latents: &image_latents,
        image_embeddings: &image_embeddings,
        encoder_hidden_states: &text,
        options: Default::default(),
    };
    let run_once = || -> Result<f64> {
        let start = Instant::now();
        let out = unet.forward(&inputs)?;
        device.synchronize()?;
        drop(out);
        Ok(start.elapsed().as_secs_f64())
    };
    run_once()?;
    vivify_core::nn::profile::reset();
    vivify_core::device::reset_peak_memory(&device)?;
    let mut times = (0..args.iters)
        .map(|_| run_once())
        .collect::<Result<Vec<_>>>()?;
    times.sort_by(f64::total_cmp);
    let peak = vivify_core::device::peak_memory(&device)?;
    // With VIVIFY_PROFILE=1: milliseconds per step by kind of operation (synchronized, so
    // slower overall than the figures above).
    let per_step = 1e3 / args.iters as f64;
    let profile: Vec<_> = vivify_core::nn::profile::totals()
        .into_iter()
        .map(|(name, secs, calls)| {
            eprintln!("{:>10.2} ms  {:>6} calls  {name}", secs * per_step, calls / args.iters as u64);
            serde_json::json!({"name": name, "ms_per_step": secs * per_step, "calls_per_step": calls / args.iters as u64})
        })
        .collect();
    let record = serde_json::json!({
        "impl": "vivify",
        "params": params,
        "width": args.width, "height": args.height, "frames": f, "batch": b,
        "dtype": format!("{dtype:?}").to_lowercase(),
        "device": crate::args::device_label(&device),
        "threads": candle_core::utils::get_num_threads(),
        "sec_min": times[0],
        "sec_median": times[times.len() / 2],
        "peak_bytes": peak,
        "weights_bytes": params * dtype.size_in_bytes(),
        "profile": profile,
    });
    println!("{record}");
    Ok(ExitCode::SUCCESS)
}
