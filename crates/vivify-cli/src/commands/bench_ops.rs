//! `vivify bench-ops`: milliseconds per convolution and attention call at the UNet's and VAE's
//! shapes (bench/gpu/torch_ops.py times the same cases in PyTorch).

use crate::args::BenchOpsArgs;
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use std::process::ExitCode;
use std::time::Instant;
use vivify_core::nn::attention::attend;
use vivify_core::nn::conv::convolve;
use vivify_core::nn::temporal_conv::conv_over_frames;

/// (name, batch, c_in, h, w, c_out, kernel, stride, padding)
type ConvCase = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

pub const CONV_CASES: &[ConvCase] = &[
    ("unet_3x3_320_64", 16, 320, 64, 64, 320, 3, 1, 1),
    ("unet_3x3_640_32", 16, 640, 32, 32, 640, 3, 1, 1),
    ("unet_3x3_1280_16", 16, 1280, 16, 16, 1280, 3, 1, 1),
    ("unet_1x1_320_640_32", 16, 320, 32, 32, 640, 1, 1, 0),
    ("unet_down_3x3_s2_320_64", 16, 320, 64, 64, 320, 3, 2, 1),
    ("vae_3x3_512_64", 1, 512, 64, 64, 512, 3, 1, 1),
    ("vae_3x3_512_256", 1, 512, 256, 256, 512, 3, 1, 1),
    ("vae_3x3_256_512", 1, 256, 512, 512, 256, 3, 1, 1),
    ("vae_3x3_128_512", 1, 128, 512, 512, 128, 3, 1, 1),
];

/// (name, batch·heads, queries, keys, head dim)
pub const ATTENTION_CASES: &[(&str, usize, usize, usize, usize)] = &[
    ("spatial_self_4096", 160, 4096, 4096, 64),
    ("spatial_self_1024", 320, 1024, 1024, 64),
    ("cross_4096x77", 160, 4096, 77, 64),
    ("temporal_16", 2 * 4096 * 5, 16, 16, 64),
];

/// (name, batch, frames, channels, h·w): the temporal (3,1,1) convolution.
pub const TEMPORAL_CASES: &[(&str, usize, usize, usize, usize)] = &[
    ("temporal_conv_320_64", 2, 16, 320, 64 * 64),
    ("temporal_conv_1280_16", 2, 16, 1280, 16 * 16),
];

pub fn run(args: &BenchOpsArgs) -> Result<ExitCode> {
    let (device, dtype) = args.device.resolve()?;
    let device_name = crate::args::device_label(&device);
    let report = |op: &str, name: &str, ms: f64, extra: serde_json::Value| {
        let record = serde_json::json!({
            "impl": "vivify", "op": op, "case": name, "ms": ms,
            "dtype": format!("{dtype:?}").to_lowercase(), "device": device_name, "extra": extra,
        });
        println!("{record}");
    };
    for &(name, n, c, h, w, k, ks, stride, pad) in CONV_CASES {
        let x = random((n, c, h, w), dtype, &device)?;
        let wt = random((k, c, ks, ks), dtype, &device)?;
        let ms = time_ms(&device, args.iters, || Ok(convolve(&x, &wt, stride, pad)?))?;
        let flops = 2.0 * (n * k * c * ks * ks) as f64 * ((h / stride) * (w / stride)) as f64;
        report(
            "conv2d",
            name,
            ms,
            serde_json::json!({"tflops": flops / ms / 1e9}),
        );
    }
    for &(name, b, f, c, hw) in TEMPORAL_CASES {
        let h = random((b, f, c, hw), dtype, &device)?;
        let (wt, bias) = (
            random((c, c, 3, 1, 1), dtype, &device)?,
            random(c, dtype, &device)?,
        );
        let ms = time_ms(&device, args.iters, || {
            Ok(conv_over_frames(&h, &wt, &bias)?)
        })?;
        let flops = 2.0 * (b * f * hw * c * c * 3) as f64;
        report(
            "conv3d_311",
            name,
            ms,
            serde_json::json!({"tflops": flops / ms / 1e9}),
        );
    }
    for &(name, bh, l, s, d) in ATTENTION_CASES {
        let q = random((1, bh, l, d), dtype, &device)?;
        let (k, v) = (
            random((1, bh, s, d), dtype, &device)?,
            random((1, bh, s, d), dtype, &device)?,
        );
        // The matmul path at full size would need a (bh, l, s) score matrix: chunk it as the
        // planner would (1024 queries), which is what runs when the fused kernel cannot.
        let opts = vivify_core::nn::compute::ComputeOptions {
            attention_query_chunk: Some(1024),
            attention_head_chunk: Some(32),
            ..Default::default()
        };
        let ms = time_ms(&device, args.iters, || Ok(attend(&q, &k, &v, opts)?))?;
        let flops = 4.0 * (bh * l * s * d) as f64;
        report(
            "attention",
            name,
            ms,
            serde_json::json!({"tflops": flops / ms / 1e9}),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn random(shape: impl Into<candle_core::Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
    Ok(Tensor::randn(0f32, 1., shape, device)?.to_dtype(dtype)?)
}

/// Best of `iters` timed calls after one warm-up, milliseconds.
fn time_ms(device: &Device, iters: usize, f: impl Fn() -> Result<Tensor>) -> Result<f64> {
    drop(f()?);
    device.synchronize()?;
    let mut best = f64::INFINITY;
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        let out = f()?;
        device.synchronize()?;
        best = best.min(start.elapsed().as_secs_f64() * 1e3);
        drop(out);
    }
    Ok(best)
}
