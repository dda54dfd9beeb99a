//! `vivify bench-ops`: milliseconds per convolution, linear, element-wise, GroupNorm and
//! attention call at the UNet's and VAE's shapes (bench/gpu/torch_ops.py times the same cases in
//! PyTorch).

use crate::args::BenchOpsArgs;
use anyhow::Result;
use candle_core::{DType, Device, Module, Tensor};
use std::process::ExitCode;
use std::time::Instant;
use vivify_core::nn::attention::attend;
use vivify_core::nn::conv::convolve;
use vivify_core::nn::ops;
use vivify_core::nn::temporal_conv::conv_over_frames;

/// The cases, shared with bench/gpu/torch_ops.py.
const CASES_JSON: &str = include_str!("../../../../bench/gpu/op_cases.json");

#[derive(serde::Deserialize)]
struct Cases {
    conv2d: Vec<ConvCase>,
    conv3d_311: Vec<TemporalCase>,
    linear: Vec<LinearCase>,
    elementwise: Vec<ElementwiseCase>,
    group_norm: Vec<GroupNormCase>,
    attention: Vec<AttentionCase>,
}

/// GroupNorm (then SiLU with `silu`) of `videos` x `frames` images, statistics pooled over each
/// video's frames (the temporal layers), as diffusers runs it on (videos, C, frames, H, W).
#[derive(serde::Deserialize)]
struct GroupNormCase {
    case: String,
    videos: usize,
    frames: usize,
    channels: usize,
    h: usize,
    w: usize,
    groups: usize,
    silu: bool,
}

/// x (tokens, in) -> (tokens, out) with a bias.
#[derive(serde::Deserialize)]
struct LinearCase {
    case: String,
    tokens: usize,
    #[serde(rename = "in")]
    in_dim: usize,
    out: usize,
}

/// One memory-bound pass: `add` (same shapes), `bias_add` (a per-channel (1, C, 1, 1) bias),
/// `permute_copy` (to channels last), `silu`.
#[derive(serde::Deserialize)]
struct ElementwiseCase {
    case: String,
    op: String,
    shape: Vec<usize>,
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
        // The weights as a layer keeps them (channels last where cuDNN reads them that way).
        #[cfg(feature = "cudnn")]
        let wt_stored = vivify_core::nn::cuda::cudnn_conv::stored_weight(wt.clone())?;
        #[cfg(not(feature = "cudnn"))]
        let wt_stored = wt.clone();
        let ms = time_ms(&device, args.iters, || {
            Ok(convolve(&x, &wt_stored, c.stride, c.padding)?)
        })?;
        let macs =
            c.batch * c.c_out * c.c_in * c.kernel * c.kernel * (c.h / c.stride) * (c.w / c.stride);
        let tflops = |ms: f64| 2.0 * macs as f64 / ms / 1e9;
        report(
            "conv2d",
            &c.case,
            ms,
            serde_json::json!({"tflops": tflops(ms)}),
        );
        #[cfg(feature = "cudnn")]
        if device.is_cuda() {
            for (path, ms) in time_conv_variants(c, &x, &wt_stored, args.iters, &device)? {
                report(
                    "conv2d_variant",
                    &format!("{}/{path}", c.case),
                    ms,
                    serde_json::json!({"tflops": tflops(ms)}),
                );
            }
        }
        // A resnet block's GroupNorm+SiLU, convolution and bias pass, plain and through the
        // channels-last handoff (conv.rs).
        #[cfg(feature = "cudnn")]
        if device.is_cuda() && c.kernel == 3 && c.stride == 1 {
            for (path, ms) in time_norm_conv(c, &x, &wt, args.iters, dtype, &device)? {
                report(
                    "norm_conv_variant",
                    &format!("{}/{path}", c.case),
                    ms,
                    serde_json::json!({"tflops": tflops(ms)}),
                );
            }
        }
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
    for c in &cases.linear {
        let x = random((c.tokens, c.in_dim), dtype, &device)?;
        let w = random((c.out, c.in_dim), dtype, &device)?;
        let b = random(c.out, dtype, &device)?;
        let layer = vivify_core::nn::linear::Linear::new(w, Some(b));
        let ms = time_ms(&device, args.iters, || Ok(layer.forward(&x)?))?;
        let macs = c.tokens * c.in_dim * c.out;
        report(
            "linear",
            &c.case,
            ms,
            serde_json::json!({"tflops": 2.0 * macs as f64 / ms / 1e9}),
        );
    }
    for c in &cases.elementwise {
        let x = random(c.shape.as_slice(), dtype, &device)?;
        let y = random(c.shape.as_slice(), dtype, &device)?;
        let bias = random(c.shape[1], dtype, &device)?;
        let op = c.op.as_str();
        // vivify's element-wise paths (nn::ops); SiLU is candle's (it runs fused into the norms).
        let ms = time_ms(&device, args.iters, || {
            Ok(match op {
                "add" => ops::add(&x, &y)?,
                "bias_add" => ops::add_per_channel(&x, Some(&bias), None, None)?,
                "permute_copy" => ops::transpose_last2(&x.flatten_from(2)?)?,
                "silu" => x.silu()?,
                other => anyhow::bail!("unknown elementwise op {other}"),
            })
        })?;
        let passes = if op == "add" { 3.0 } else { 2.0 };
        let bytes = passes * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
        report(
            "elementwise",
            &c.case,
            ms,
            serde_json::json!({"gb_per_s": bytes / ms / 1e6}),
        );
    }
    for c in &cases.group_norm {
        let x = random((c.videos * c.frames, c.channels, c.h, c.w), dtype, &device)?;
        let affine = std::collections::HashMap::from([
            ("weight".to_string(), random(c.channels, dtype, &device)?),
            ("bias".to_string(), random(c.channels, dtype, &device)?),
        ]);
        let vb = candle_nn::VarBuilder::from_tensors(affine, dtype, &device);
        let norm = vivify_core::nn::norm::GroupNorm::new(vb, c.groups, c.channels, 1e-6)?;
        // One read for the statistics, one read and one write to apply.
        let bytes = 3.0 * x.elem_count() as f64 * dtype.size_in_bytes() as f64;
        let ms = time_ms(&device, args.iters, || {
            Ok(match c.silu {
                true => norm.forward_frames_silu(&x, c.frames)?,
                false => norm.forward_frames(&x, c.frames)?,
            })
        })?;
        report(
            "group_norm",
            &c.case,
            ms,
            serde_json::json!({"gb_per_s": bytes / ms / 1e6}),
        );
        // Written channels last for the convolution or the tokens that follow (the handoff).
        #[cfg(feature = "cuda")]
        if norm
            .forward_frames_channels_last(&x, c.frames, c.silu)?
            .is_some()
        {
            let ms = time_ms(&device, args.iters, || {
                Ok(norm
                    .forward_frames_channels_last(&x, c.frames, c.silu)?
                    .expect("checked above"))
            })?;
            report(
                "group_norm_variant",
                &format!("{}/channels_last", c.case),
                ms,
                serde_json::json!({"gb_per_s": bytes / ms / 1e6}),
            );
        }
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
        let tflops =
            |ms: f64| 4.0 * (c.batch_heads * c.queries * c.keys * c.head_dim) as f64 / ms / 1e9;
        report(
            "attention",
            &c.case,
            ms,
            serde_json::json!({"tflops": tflops(ms)}),
        );
        // Each fused kernel variant on its own, whichever the environment selects for `attend`.
        #[cfg(feature = "cuda")]
        for tiles in vivify_core::nn::cuda::flash_attention::Tiles::ALL {
            use vivify_core::nn::cuda::flash_attention::flash_attention_with;
            // A variant switched off (its tests failed) is not run: a fault would end the run.
            if !vivify_core::nn::cuda::enabled(tiles.switch()) {
                continue;
            }
            // A variant that fails on this card costs its row only.
            match flash_attention_with(&q, &k, &v, tiles) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => {
                    eprintln!("attention {} with {} tiles: {e}", c.case, tiles.name());
                    continue;
                }
            }
            let ms = time_ms(&device, args.iters, || {
                Ok(flash_attention_with(&q, &k, &v, tiles)?.expect("covered above"))
            })?;
            report(
                "attention_variant",
                &format!("{}/{}", c.case, tiles.name()),
                ms,
                serde_json::json!({"tflops": tflops(ms)}),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Milliseconds for the convolution of x (NCHW) with `w_stored` (w as a layer keeps it) by
/// each way `convolve` chooses from (`nn::cuda::conv_path`: "transposes", "nchw_strides",
/// "cublas" and "cublaslt" for 1x1), whatever it chose, plus "legacy" (3x3: cuDNN's legacy API
/// through transposes) and "channels_last" (input and output channels last, no transposes, as
/// the resnet blocks run after the GroupNorm's handoff; torch_ops.py times torch.channels_last).
/// A way that fails costs its row only; one switched off (its tests failed on the card) is not
/// run.
#[cfg(feature = "cudnn")]
fn time_conv_variants(
    c: &ConvCase,
    x: &Tensor,
    w_stored: &Tensor,
    iters: usize,
    device: &Device,
) -> Result<Vec<(&'static str, f64)>> {
    use vivify_core::nn::cuda::{conv_path::ConvPath, cudnn_conv};
    let (stride, pad) = (c.stride, c.padding);
    let mut rows = Vec::new();
    if c.kernel == 3 {
        let ms = time_ms(device, iters, || {
            Ok(cudnn_conv::legacy_conv2d(x, w_stored, stride, pad)?)
        })?;
        rows.push(("legacy", ms));
    }
    for path in ConvPath::ALL {
        if !path.applies(w_stored, stride, pad)? {
            continue;
        }
        match path.run(x, w_stored, stride, pad) {
            Ok(Some(_)) => {
                let ms = time_ms(device, iters, || {
                    Ok(path.run(x, w_stored, stride, pad)?.expect("covered above"))
                })?;
                rows.push((path.name(), ms));
            }
            Ok(None) => {}
            Err(e) => eprintln!("conv2d {} by {}: {e}", c.case, path.name()),
        }
    }
    let x_cl = vivify_core::nn::ops::to_channels_last(x)?;
    let ms = time_ms(device, iters, || {
        Ok(cudnn_conv::conv2d_channels_last(
            &x_cl, w_stored, stride, pad,
        )?)
    })?;
    rows.push(("channels_last", ms));
    Ok(rows)
}

/// Milliseconds for GroupNorm(+SiLU), the convolution and its bias on x, `c`'s input, by path:
/// "plain", and "channels_last_handoff" unless it is switched off or fails on this card (that
/// costs its row only).
#[cfg(feature = "cudnn")]
fn time_norm_conv(
    c: &ConvCase,
    x: &Tensor,
    weight: &Tensor,
    iters: usize,
    dtype: DType,
    device: &Device,
) -> Result<Vec<(&'static str, f64)>> {
    use std::collections::HashMap;
    use vivify_core::nn::conv::{conv2d, norm_conv_channels_last};
    use vivify_core::nn::norm::GroupNorm;
    let vb = |tensors: [(&str, Tensor); 2]| {
        let map: HashMap<String, Tensor> = tensors.map(|(k, v)| (k.to_string(), v)).into();
        candle_nn::VarBuilder::from_tensors(map, dtype, device)
    };
    let norm = GroupNorm::new(
        vb([
            ("weight", random(c.c_in, dtype, device)?),
            ("bias", random(c.c_in, dtype, device)?),
        ]),
        32,
        c.c_in,
        1e-6,
    )?;
    let cfg = candle_nn::Conv2dConfig {
        padding: c.padding,
        stride: c.stride,
        ..Default::default()
    };
    let conv = conv2d(
        c.c_in,
        c.c_out,
        c.kernel,
        cfg,
        vb([
            ("weight", weight.clone()),
            ("bias", random(c.c_out, dtype, device)?),
        ]),
    )?;
    let plain = time_ms(device, iters, || {
        Ok(conv.forward_plus(&norm.forward_silu(x)?, None, None)?)
    })?;
    let mut rows = vec![("plain", plain)];
    if !vivify_core::nn::cuda::enabled("channels_last_handoff") {
        return Ok(rows);
    }
    match norm_conv_channels_last(&conv, &norm, x, None, None) {
        Ok(Some(_)) => {
            let ms = time_ms(device, iters, || {
                Ok(norm_conv_channels_last(&conv, &norm, x, None, None)?.expect("covered above"))
            })?;
            rows.push(("channels_last_handoff", ms));
        }
        Ok(None) => {}
        Err(e) => eprintln!(
            "norm + conv2d {} through the channels-last handoff: {e}",
            c.case
        ),
    }
    Ok(rows)
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
        assert!(!c.group_norm.is_empty());
        for g in &c.group_norm {
            assert!(g.channels.is_multiple_of(g.groups), "{}", g.case);
        }
    }
}
