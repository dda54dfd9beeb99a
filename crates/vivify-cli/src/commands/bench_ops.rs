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

/// The cases, shared with bench/gpu/torch_ops.py.
const CASES_JSON: &str = include_str!("../../../../bench/gpu/op_cases.json");

#[derive(serde::Deserialize)]
struct Cases {
    conv2d: Vec<ConvCase>,
    conv3d_311: Vec<TemporalCase>,
    attention: Vec<AttentionCase>,
}

#[derive(serde::Deserialize)]
struct ConvCase {
    case: String,
    batch: usize,
    c_in: usize,
    h: usize,
    w: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

/// The temporal (3,1,1) convolution.
#[derive(serde::Deserialize)]
struct TemporalCase {
    case: String,
    batch: usize,
    frames: usize,
    channels: usize,
    h: usize,
    w: usize,
}

#[derive(serde::Deserialize)]
struct AttentionCase {
    case: String,
    batch_heads: usize,
    queries: usize,
    keys: usize,
    head_dim: usize,
}

fn cases() -> Result<Cases> {
    Ok(serde_json::from_str(CASES_JSON)?)
}

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
    let cases = cases()?;
    for c in &cases.conv2d {
        let x = random((c.batch, c.c_in, c.h, c.w), dtype, &device)?;
        let wt = random((c.c_out, c.c_in, c.kernel, c.kernel), dtype, &device)?;
        let ms = time_ms(&device, args.iters, || {
            Ok(convolve(&x, &wt, c.stride, c.padding)?)
        })?;
        let macs =
            c.batch * c.c_out * c.c_in * c.kernel * c.kernel * (c.h / c.stride) * (c.w / c.stride);
        report(
            "conv2d",
            &c.case,
            ms,
            serde_json::json!({"tflops": 2.0 * macs as f64 / ms / 1e9}),
        );
    }
    for c in &cases.conv3d_311 {
        let hw = c.h * c.w;
        let h = random((c.batch, c.frames, c.channels, hw), dtype, &device)?;
        let wt = random((c.channels, c.channels, 3, 1, 1), dtype, &device)?;
        let bias = random(c.channels, dtype, &device)?;
        let ms = time_ms(&device, args.iters, || {
            Ok(conv_over_frames(&h, &wt, &bias)?)
        })?;
        let macs = c.batch * c.frames * hw * c.channels * c.channels * 3;
        report(
            "conv3d_311",
            &c.case,
            ms,
            serde_json::json!({"tflops": 2.0 * macs as f64 / ms / 1e9}),
        );
    }
    // The matmul path at full size would need a (bh, l, s) score matrix: chunk it as the planner
    // would (1024 queries), which is what runs when the fused kernel cannot.
    let opts = vivify_core::nn::compute::ComputeOptions {
        attention_query_chunk: Some(1024),
        attention_head_chunk: Some(32),
        ..Default::default()
    };
    for c in &cases.attention {
        let q = random((1, c.batch_heads, c.queries, c.head_dim), dtype, &device)?;
        let k = random((1, c.batch_heads, c.keys, c.head_dim), dtype, &device)?;
        let v = random((1, c.batch_heads, c.keys, c.head_dim), dtype, &device)?;
        let ms = time_ms(&device, args.iters, || Ok(attend(&q, &k, &v, opts)?))?;
        let macs = c.batch_heads * c.queries * c.keys * c.head_dim;
        report(
            "attention",
            &c.case,
            ms,
            serde_json::json!({"tflops": 4.0 * macs as f64 / ms / 1e9}),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_shared_cases_parse() {
        let c = super::cases().unwrap();
        assert!(!c.conv2d.is_empty() && !c.conv3d_311.is_empty() && !c.attention.is_empty());
    }
}
