//! vivify's CUDA kernels against the plain paths (feature `cuda`; needs a GPU, so CI without the
//! feature skips this file). bench/gpu/run.sh runs the built test binary on the lent machine.
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use vivify_core::nn::attention::scaled_dot_product_attention;
use vivify_core::nn::cuda::flash_attention::{Tiles, flash_attention, flash_attention_with};

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

/// max |a - b| / max |b|, on the host.
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    rel_err_on(&Device::Cpu, a, b)
}

/// [`rel_err`] computed on `dev`: the device itself for tensors too large to copy to the host
/// quickly.
fn rel_err_on(dev: &Device, a: &Tensor, b: &Tensor) -> f32 {
    let f32_on = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(dev).unwrap();
    let (a, b) = (f32_on(a), f32_on(b));
    let max_abs = |t: &Tensor| {
        t.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    max_abs(&(&a - &b).unwrap()) / max_abs(&b)
}

/// Normal random values of `shape` drawn on `dev` and rounded to f16 (for the cuDNN tests).
#[cfg(feature = "cudnn")]
fn randn_f16(dev: &Device, shape: &[usize], mean: f32, std: f32) -> Tensor {
    Tensor::randn(mean, std, shape, dev)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}

/// Tiles through registers, the fallback (bench/gpu/run.sh maps test names to kernel names:
/// keep the prefixes).
#[test]
fn flash_attention_matches_the_matmul_path() {
    flash_attention_variant_matches_the_matmul_path(Tiles::Registers);
}

/// The double-buffered cp.async variant (`VIVIFY_CUDA_DISABLE=attention_ldmatrix`; with
/// `attention_async` too, the register-loaded tiles).
#[test]
fn flash_attention_async_tiles_match_the_matmul_path() {
    flash_attention_variant_matches_the_matmul_path(Tiles::Async);
}

/// ldmatrix fragments and 128-query blocks: the default.
#[test]
fn flash_attention_ldmatrix_tiles_match_the_matmul_path() {
    flash_attention_variant_matches_the_matmul_path(Tiles::Ldmatrix);
}

/// At the UNet's full-size shapes (bench-ops' cases, and temporal attention over 32 frames at
/// 1024x1024), the ldmatrix kernel gives what the register-tile kernel gives: a launch or
/// indexing fault that only large grids reach shows up here, not in the benchmark.
#[test]
fn flash_attention_ldmatrix_agrees_with_the_register_kernel_at_full_size() {
    let dev = cuda();
    let mut cases: Vec<(usize, usize, usize)> = op_cases()["attention"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap() as usize;
            assert_eq!(n("head_dim"), 64);
            (n("batch_heads"), n("queries"), n("keys"))
        })
        .collect();
    cases.push((2 * 128 * 128 * 5, 32, 32));
    for (bh, l, s) in cases {
        let rand = |len| {
            Tensor::randn(0f32, 1., (1, bh, len, 64), &dev)
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap()
        };
        let (q, k, v) = (rand(l), rand(s), rand(s));
        let run = |tiles| {
            flash_attention_with(&q, &k, &v, tiles)
                .unwrap()
                .expect("fused path")
        };
        let err = rel_err_on(&dev, &run(Tiles::Ldmatrix), &run(Tiles::Registers));
        println!("flash (ldmatrix vs registers) {bh}x{l}x{s}x64: rel err {err:.2e}");
        assert!(err < 2e-3, "{bh}x{l}x{s}: {err}");
    }
}

/// bench/gpu/op_cases.json: the shapes bench-ops and torch_ops.py time.
fn op_cases() -> serde_json::Value {
    serde_json::from_str(include_str!("../../../bench/gpu/op_cases.json")).unwrap()
}

fn flash_attention_variant_matches_the_matmul_path(tiles: Tiles) {
    let dev = cuda();
    // (batch, heads, queries, keys, head dim): spatial self-attention with a partial tile,
    // cross-attention to 77 tokens, fewer queries than one 128-query block, temporal attention
    // over 16 frames, CLIP's head dim 80.
    let cases = [
        (2, 5, 1000, 1000, 64),
        (2, 5, 256, 77, 64),
        (1, 4, 40, 300, 64),
        (2, 5, 256, 256, 64),
        (64, 5, 16, 16, 64),
        (1, 3, 257, 257, 80),
        (1, 2, 130, 70, 128),
    ];
    for dtype in [DType::F16, DType::BF16] {
        for (n, h, l, s, d) in cases {
            let q = Tensor::randn(0f32, 1., (n, h, l, d), &dev).unwrap();
            let k = Tensor::randn(0f32, 1., (n, h, s, d), &dev).unwrap();
            let v = Tensor::randn(0f32, 1., (n, h, s, d), &dev).unwrap();
            // The kernel answers (N, L, H, D).
            let reference = scaled_dot_product_attention(&q, &k, &v)
                .unwrap()
                .transpose(1, 2)
                .unwrap();
            let half = |t: &Tensor| t.to_dtype(dtype).unwrap();
            // Heads as views of a (N, L, H·D) projection, as the attention layers pass them.
            let heads_view = |t: &Tensor| {
                half(t)
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
            };
            for (layout, (qh, kh, vh)) in [
                ("contiguous", (half(&q), half(&k), half(&v))),
                (
                    "head views",
                    (heads_view(&q), heads_view(&k), heads_view(&v)),
                ),
            ] {
                let fused = flash_attention_with(&qh, &kh, &vh, tiles)
                    .unwrap()
                    .expect("fused path");
                assert_eq!(fused.dims(), reference.dims());
                let err = rel_err(&fused, &reference);
                println!(
                    "flash ({} tiles) {dtype:?} {layout} {n}x{h}x{l}x{s}x{d}: rel err {err:.2e}",
                    tiles.name()
                );
                let limit = if dtype == DType::F16 { 5e-3 } else { 3e-2 };
                assert!(
                    err < limit,
                    "{dtype:?} {layout} {:?}: {err}",
                    (n, h, l, s, d)
                );
            }
        }
    }
    // f32 and unsupported head dims are left to the matmul path.
    let q = Tensor::randn(0f32, 1., (1, 1, 8, 64), &dev).unwrap();
    assert!(flash_attention(&q, &q, &q).unwrap().is_none());
}

/// The temporal (3,1,1) convolution's GEMMs (nn/cuda/frame_conv.rs): edge frames, the batch of
/// interior ones, and videos of one and two frames.
#[test]
fn frame_conv_matches_the_cpu() {
    use vivify_core::nn::temporal_conv::conv_over_frames;
    let dev = cuda();
    for frames in [1, 2, 3, 16] {
        let (b, c, c_out, pixels) = (2, 24, 40, 37);
        let h = Tensor::randn(0f32, 1., (b, frames, c, pixels), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.2, (c_out, c, 3, 1, 1), &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 1., c_out, &Device::Cpu).unwrap();
        let reference = conv_over_frames(&h, &w, &bias).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let on = |t: &Tensor| t.to_device(&dev).unwrap().to_dtype(dtype).unwrap();
            let out = conv_over_frames(&on(&h), &on(&w), &on(&bias)).unwrap();
            assert_eq!(out.dims(), reference.dims());
            let err = rel_err(&out, &reference);
            println!("frame conv {dtype:?} {frames} frames: rel err {err:.2e}");
            let limit = if dtype == DType::F16 { 3e-3 } else { 2e-2 };
            assert!(err < limit, "{dtype:?} {frames} frames: {err}");
        }
    }
}

/// Through `convolve`: cuDNN for 3x3 (with the `cudnn` feature: its graph API, the legacy API
/// where that has no engine), cuBLAS for 1x1.
#[test]
fn convolution_matches_the_cpu() {
    use vivify_core::nn::conv::convolve;
    convolution_path_matches_the_cpu("conv", |x, w, stride, pad| {
        Some(convolve(x, w, stride, pad).unwrap())
    });
}

/// `convolve` with the weights as a layer keeps them (`cudnn_conv::stored_weight`: half types'
/// 3x3 kernels stored channels last), through the graph API (also with NCHW x and y) and the
/// legacy API: the stored buffer is read in place, not transposed again.
#[cfg(feature = "cudnn")]
#[test]
fn convolution_with_stored_weights_matches_the_cpu() {
    use vivify_core::nn::conv::convolve;
    use vivify_core::nn::cuda::cudnn_conv::{legacy_conv2d, stored_weight};
    use vivify_core::nn::cuda::cudnn_graph_conv::conv2d_in_layout;
    convolution_path_matches_the_cpu("conv stored weights", |x, w, stride, pad| {
        let stored = stored_weight(w.clone()).unwrap();
        let kept_channels_last = !stored.is_contiguous();
        assert_eq!(
            kept_channels_last,
            x.dtype() != DType::F32 && w.dim(2).unwrap() > 1,
            "{:?} {:?}",
            x.dtype(),
            w.shape()
        );
        let legacy = legacy_conv2d(x, &stored, stride, pad).unwrap();
        let y = convolve(x, &stored, stride, pad).unwrap();
        let err = rel_err(&legacy, &y);
        assert!(err < 5e-3, "graph against legacy: {err}");
        // NCHW strides for x and y with the weight as stored (bench-ops' nchw_strides row),
        // where cuDNN has an engine for that mix.
        match conv2d_in_layout(x, &stored, stride, pad, false).unwrap() {
            Some(nchw) => {
                let err = rel_err(&legacy, &nchw);
                assert!(err < 5e-3, "NCHW graph against legacy: {err}");
            }
            None => println!("no graph engine for NCHW with {:?}", stored.layout()),
        }
        Some(y)
    });
}

/// cuDNN's legacy API on the same cases, called directly: the path where the graph API has no
/// engine for a shape, and with `VIVIFY_CUDA_DISABLE=cudnn_graph`.
#[cfg(feature = "cudnn")]
#[test]
fn convolution_legacy_matches_the_cpu() {
    use vivify_core::nn::cuda::cudnn_conv::legacy_conv2d;
    convolution_path_matches_the_cpu("conv legacy", |x, w, stride, pad| {
        Some(legacy_conv2d(x, w, stride, pad).unwrap())
    });
}

/// `conv` (None: the path has no kernel for the case, a failure here) against the CPU's
/// convolution: 3x3 with stride 1 and 2, with and without padding, and 1x1; f32, f16, bf16.
fn convolution_path_matches_the_cpu(
    name: &str,
    conv: impl Fn(&Tensor, &Tensor, usize, usize) -> Option<Tensor>,
) {
    let dev = cuda();
    // (batch, c_in, h, w, c_out, kernel, stride, padding)
    let cases = [
        (2, 32, 17, 9, 48, 3, 1, 1),
        (2, 16, 16, 16, 16, 3, 2, 1),
        (1, 16, 9, 9, 16, 3, 2, 0),
        (3, 24, 8, 8, 40, 1, 1, 0),
    ];
    for (n, c, h, w, k, ks, stride, pad) in cases {
        let x = Tensor::randn(0f32, 1., (n, c, h, w), &Device::Cpu).unwrap();
        let wt = Tensor::randn(0f32, 0.2, (k, c, ks, ks), &Device::Cpu).unwrap();
        let reference = x.conv2d(&wt, pad, stride, 1, 1).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let xg = x.to_device(&dev).unwrap().to_dtype(dtype).unwrap();
            let wg = wt.to_device(&dev).unwrap().to_dtype(dtype).unwrap();
            let case = (n, c, h, w, k, ks, stride, pad);
            let out = conv(&xg, &wg, stride, pad).unwrap_or_else(|| {
                panic!("{name} {dtype:?} {case:?}: no kernel (VIVIFY_CONV_LOG=1 says why)")
            });
            assert_eq!(out.dims(), reference.dims());
            let err = rel_err(&out, &reference);
            println!("{name} {dtype:?} {case:?}: rel err {err:.2e}");
            let limit = match dtype {
                DType::F32 => 1e-5,
                DType::F16 => 3e-3,
                _ => 2e-2,
            };
            assert!(err < limit, "{dtype:?}: {err}");
        }
    }
}

/// A searched cuDNN algorithm (the legacy API's, found by timing its algorithms) is written to
/// the cache file and the next process finds it there instead of searching.
#[cfg(feature = "cudnn")]
#[test]
fn conv_algorithm_choice_is_kept_on_disk() {
    conv_choice_is_kept_on_disk(
        "conv_algorithm_choice_is_kept_on_disk",
        ("nhwc", [1, 24, 11, 13, 40, 3, 3, 1, 1]),
        &[("VIVIFY_CUDA_DISABLE", "cudnn_graph,conv_path_choice")],
        ("(from a search", "(from the cache)"),
    );
}

/// The graph API's config found by timing (`VIVIFY_CONV_GRAPH_SEARCH`) is written to the cache
/// file and the next process takes it from there instead of timing again.
#[cfg(feature = "cudnn")]
#[test]
fn conv_graph_search_choice_is_kept_on_disk() {
    conv_choice_is_kept_on_disk(
        "conv_graph_search_choice_is_kept_on_disk",
        ("nhwc graph", [1, 24, 11, 13, 48, 3, 3, 1, 1]),
        &[
            ("VIVIFY_CONV_GRAPH_SEARCH", "4"),
            ("VIVIFY_CUDA_DISABLE", "conv_path_choice"),
        ],
        ("timed:", "recorded by a search"),
    );
}

/// The way `convolve` chose for an NCHW shape by timing them (`nn::cuda::conv_path`) is written
/// to the cache file and the next process takes it from there instead of timing again.
#[cfg(feature = "cudnn")]
#[test]
fn conv_path_choice_is_kept_on_disk() {
    conv_choice_is_kept_on_disk(
        "conv_path_choice_is_kept_on_disk",
        (
            "nchw path (transposes, nchw_strides)",
            [1, 24, 11, 13, 56, 3, 3, 1, 1],
        ),
        &[],
        ("(timed:", "(recorded)"),
    );
}

/// Every way `convolve` chooses from, called directly, against the CPU on the shared cases, and
/// the choice's own answer (`chosen` then `convolve`) against the CPU: a way with no kernel for
/// a case is left out of the choice, so only the transposes must run everywhere.
#[cfg(feature = "cudnn")]
#[test]
fn conv_path_choice_matches_the_cpu() {
    use vivify_core::nn::conv::convolve;
    use vivify_core::nn::cuda::conv_path::{ConvPath, chosen};
    convolution_path_matches_the_cpu("conv path choice", |x, w, stride, pad| {
        let cpu = |t: &Tensor| {
            t.to_dtype(DType::F32)
                .unwrap()
                .to_device(&Device::Cpu)
                .unwrap()
        };
        let reference = cpu(x).conv2d(&cpu(w), pad, stride, 1, 1).unwrap();
        let limit = if x.dtype() == DType::BF16 { 1e-2 } else { 3e-3 };
        for path in ConvPath::ALL {
            if !path.applies(w, stride, pad).unwrap() {
                continue;
            }
            match path.run(x, w, stride, pad).unwrap() {
                Some(y) => {
                    let err = rel_err(&y, &reference);
                    println!("  {} {:?}: rel err {err:.2e}", path.name(), x.dtype());
                    assert!(err < limit, "{} {:?}: {err}", path.name(), x.dtype());
                }
                None => {
                    assert_ne!(path, ConvPath::Transposes);
                    println!("  {} {:?}: no kernel", path.name(), x.dtype());
                }
            }
        }
        if x.dtype() != DType::F32 {
            println!("  chosen: {}", chosen(x, w, stride, pad).unwrap().name());
        }
        Some(convolve(x, w, stride, pad).unwrap())
    });
}

/// cuDNN's graph API given NCHW strides (the way PyTorch runs NCHW tensors) against the CPU,
/// with the weight as a layer keeps it, at the shared cases (where cuDNN has an engine) and at
/// bench-ops' full-size shapes in f16 (where a fault would show only at size).
#[cfg(feature = "cudnn")]
#[test]
fn conv_nchw_strides_matches_the_cpu() {
    use vivify_core::nn::cuda::conv_path::ConvPath;
    use vivify_core::nn::cuda::cudnn_conv::stored_weight;
    let path = ConvPath::NchwStrides;
    convolution_path_matches_the_cpu("conv nchw strides", |x, w, stride, pad| {
        let stored = stored_weight(w.clone()).unwrap();
        match path.run(x, &stored, stride, pad).unwrap() {
            Some(y) => Some(y),
            None => {
                println!("  no engine for {:?} {:?}", x.dtype(), x.shape());
                ConvPath::Transposes.run(x, &stored, stride, pad).unwrap()
            }
        }
    });
    let dev = cuda();
    for c in op_cases()["conv2d"].as_array().unwrap() {
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        let (stride, pad, ks) = (n("stride"), n("padding"), n("kernel"));
        let x = randn_f16(&dev, &[n("batch"), n("c_in"), n("h"), n("w")], 0., 1.);
        let w = stored_weight(randn_f16(&dev, &[n("c_out"), n("c_in"), ks, ks], 0., 0.05)).unwrap();
        let Some(y) = path.run(&x, &w, stride, pad).unwrap() else {
            println!("conv nchw strides {}: no engine", c["case"]);
            continue;
        };
        let want = ConvPath::Transposes
            .run(&x, &w, stride, pad)
            .unwrap()
            .unwrap();
        let err = rel_err_on(&dev, &y, &want);
        println!(
            "conv nchw strides vs transposes {}: rel err {err:.2e}",
            c["case"]
        );
        assert!(err < 5e-3, "{c}: {err}");
    }
}

/// `test` runs itself twice as a child process with `VIVIFY_CONV_CACHE` at a fresh file and
/// `setting` set, convolving f16 `shape` ([n, c, h, w, k, kh, kw, stride, padding], a shape no
/// other test uses) channels last: the first child must log `searched` and leave a choice under
/// `layout` in the file, the second must find it there and log `found`.
#[cfg(feature = "cudnn")]
fn conv_choice_is_kept_on_disk(
    test: &str,
    (layout, s): (&str, [usize; 9]),
    settings: &[(&str, &str)],
    (searched, found): (&str, &str),
) {
    use vivify_core::nn::conv::convolve;
    use vivify_core::nn::conv_algorithms::{self, ConvAlgorithmCache};
    const CHILD: &str = "VIVIFY_TEST_CONV_CACHE_CHILD";
    let dev = cuda();
    let mut key = vivify_core::nn::cuda::cudnn_conv::disk_key(
        dev.as_cuda_device().unwrap(),
        DType::F16,
        true,
        s,
    )
    .unwrap();
    key.layout = layout.into();
    if std::env::var_os(CHILD).is_some() {
        // Whether this process's cache knew the shape before convolving.
        println!("cached before: {}", conv_algorithms::lookup(&key).is_some());
        let x = Tensor::randn(0f32, 1., (s[0], s[1], s[2], s[3]), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 0.2, (s[4], s[1], s[5], s[6]), &Device::Cpu).unwrap();
        let reference = x.conv2d(&w, s[8], s[7], 1, 1).unwrap();
        let half = |t: &Tensor| t.to_device(&dev).unwrap().to_dtype(DType::F16).unwrap();
        let out = convolve(&half(&x), &half(&w), s[7], s[8]).unwrap();
        let err = rel_err(&out, &reference);
        assert!(err < 3e-3, "{err}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("conv-algorithms.json");
    let child = || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture"])
            .env(CHILD, "1")
            .env("VIVIFY_CONV_CACHE", &file)
            .env("VIVIFY_CONV_LAYOUT", "nhwc")
            .env("VIVIFY_CONV_LOG", "1")
            .envs(settings.iter().copied())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        println!("{text}");
        assert!(out.status.success(), "{text}");
        text
    };
    let first = child();
    assert!(first.contains("cached before: false"), "{first}");
    assert!(first.contains(searched), "{first}");
    let recorded = ConvAlgorithmCache::open(Some(file.clone())).get(&key);
    println!("recorded for {key:?}: {recorded:?}");
    assert!(recorded.is_some());
    let second = child();
    assert!(second.contains("cached before: true"), "{second}");
    assert!(second.contains(found), "{second}");
}

/// The graph-API path on the same cases, called directly so it runs whatever the environment
/// selects: each case must find an engine and match the CPU.
#[cfg(feature = "cudnn")]
#[test]
fn convolution_graph_matches_the_cpu() {
    use vivify_core::nn::cuda::cudnn_graph_conv::conv2d;
    convolution_path_matches_the_cpu("conv graph", |x, w, stride, pad| {
        conv2d(x, w, stride, pad).unwrap()
    });
}

/// The graph API against the legacy path at bench-ops' full-size 3x3 shapes (the UNet's and the
/// VAE's), f16 channels last as the UNet runs them: an engine that fails or faults only at large
/// sizes shows up here.
#[cfg(feature = "cudnn")]
#[test]
fn convolution_graph_agrees_with_the_legacy_path_at_full_size() {
    use vivify_core::nn::cuda::{cudnn_conv, cudnn_graph_conv};
    let dev = cuda();
    for c in op_cases()["conv2d"].as_array().unwrap() {
        let n = |k: &str| c[k].as_u64().unwrap() as usize;
        if n("kernel") != 3 {
            continue;
        }
        let (stride, pad) = (n("stride"), n("padding"));
        let x = randn_f16(&dev, &[n("batch"), n("c_in"), n("h"), n("w")], 0., 1.);
        let w = randn_f16(&dev, &[n("c_out"), n("c_in"), 3, 3], 0., 0.05);
        let graph = cudnn_graph_conv::conv2d(&x, &w, stride, pad)
            .unwrap()
            .unwrap_or_else(|| panic!("{c}: no graph engine (VIVIFY_CONV_LOG=1 says why)"));
        let legacy = cudnn_conv::legacy_conv2d(&x, &w, stride, pad).unwrap();
        assert_eq!(graph.dims(), legacy.dims());
        let err = rel_err_on(&dev, &graph, &legacy);
        println!("conv graph vs legacy {}: rel err {err:.2e}", c["case"]);
        assert!(err < 5e-3, "{c}: {err}");
    }
}

#[test]
fn group_norm_matches_the_cpu() {
    use candle_nn::VarBuilder;
    use std::collections::HashMap;
    use vivify_core::nn::norm::GroupNorm;
    let dev = cuda();
    // (videos, frames, channels, h, w, groups): per-sample (pixels not a multiple of 8: one
    // element per access), pooled over frames, many slices, slices that end mid-frame.
    let cases = [
        (2, 1, 64, 9, 7, 32),
        (2, 4, 32, 8, 8, 8),
        (1, 16, 64, 32, 32, 32),
        (1, 5, 96, 48, 48, 32),
    ];
    for (b, f, c, h, w, g) in cases {
        let x = Tensor::randn(0.5f32, 2., (b * f, c, h, w), &Device::Cpu).unwrap();
        let weight = Tensor::randn(1f32, 0.1, c, &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 0.1, c, &Device::Cpu).unwrap();
        let norm_on = |device: &Device, dtype: DType| {
            let tensors = HashMap::from([
                (
                    "weight".to_string(),
                    weight.to_dtype(dtype).unwrap().to_device(device).unwrap(),
                ),
                (
                    "bias".to_string(),
                    bias.to_dtype(dtype).unwrap().to_device(device).unwrap(),
                ),
            ]);
            GroupNorm::new(VarBuilder::from_tensors(tensors, dtype, device), g, c, 1e-6).unwrap()
        };
        let cpu = norm_on(&Device::Cpu, DType::F32);
        for silu in [false, true] {
            let reference = if silu {
                cpu.forward_frames_silu(&x, f).unwrap()
            } else {
                cpu.forward_frames(&x, f).unwrap()
            };
            for dtype in [DType::F32, DType::F16, DType::BF16] {
                let gpu = norm_on(&dev, dtype);
                let xg = x.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
                let out = if silu {
                    gpu.forward_frames_silu(&xg, f).unwrap()
                } else {
                    gpu.forward_frames(&xg, f).unwrap()
                };
                let err = rel_err(&out, &reference);
                println!(
                    "group norm {dtype:?} {:?} silu {silu}: rel err {err:.2e}",
                    (b, f, c, h, w, g)
                );
                let limit = match dtype {
                    DType::F32 => 1e-5,
                    DType::F16 => 3e-3,
                    _ => 2e-2,
                };
                assert!(err < limit, "{dtype:?}: {err}");
            }
        }
    }
}

#[test]
fn layer_norm_matches_the_cpu() {
    use candle_core::Module;
    use candle_nn::VarBuilder;
    use std::collections::HashMap;
    use vivify_core::nn::norm::LayerNorm;
    let dev = cuda();
    // Widths kept in registers, 16 bytes per access (f32's 1280 is too wide for that), and one
    // that is not whole 16-byte chunks.
    for (rows, dim) in [(3, 320), (1000, 1280), (7, 80), (5, 77)] {
        let x = Tensor::randn(3f32, 2., (rows, 1, dim), &Device::Cpu).unwrap();
        let weight = Tensor::randn(1f32, 0.1, dim, &Device::Cpu).unwrap();
        let bias = Tensor::randn(0f32, 0.1, dim, &Device::Cpu).unwrap();
        let norm_on = |device: &Device, dtype: DType| {
            let tensors = HashMap::from([
                (
                    "weight".to_string(),
                    weight.to_dtype(dtype).unwrap().to_device(device).unwrap(),
                ),
                (
                    "bias".to_string(),
                    bias.to_dtype(dtype).unwrap().to_device(device).unwrap(),
                ),
            ]);
            LayerNorm::new(VarBuilder::from_tensors(tensors, dtype, device), dim, 1e-5).unwrap()
        };
        let reference = norm_on(&Device::Cpu, DType::F32).forward(&x).unwrap();
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let xg = x.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
            let out = norm_on(&dev, dtype).forward(&xg).unwrap();
            let err = rel_err(&out, &reference);
            println!("layer norm {dtype:?} {rows}x{dim}: rel err {err:.2e}");
            let limit = match dtype {
                DType::F32 => 1e-5,
                DType::F16 => 3e-3,
                _ => 2e-2,
            };
            assert!(err < limit, "{dtype:?}: {err}");
        }
    }
}

/// The cuBLASLt linear (bias in the epilogue) against candle's matmul + bias on the CPU.
#[test]
fn linear_matches_the_cpu() {
    use vivify_core::nn::cuda::linear::linear;
    let dev = cuda();
    // (token dims, in, out): a spatial projection, temporal tokens, the GEGLU projection.
    let cases: [(&[usize], usize, usize); 3] = [
        (&[2, 1024], 320, 320),
        (&[512, 16], 320, 320),
        (&[1, 300], 640, 5120),
    ];
    for dtype in [DType::F16, DType::BF16] {
        for (tokens, k, n) in cases {
            let mut x_dims = tokens.to_vec();
            x_dims.push(k);
            let x = Tensor::randn(0f32, 1., x_dims, &Device::Cpu).unwrap();
            let w = (Tensor::randn(0f32, 1., (n, k), &Device::Cpu).unwrap() / (k as f64).sqrt())
                .unwrap();
            let b = Tensor::randn(0f32, 1., n, &Device::Cpu).unwrap();
            let reference = x
                .broadcast_matmul(&w.t().unwrap())
                .unwrap()
                .broadcast_add(&b)
                .unwrap();
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
            for bias in [true, false] {
                let got = linear(&on(&x), &on(&w), bias.then(|| on(&b)).as_ref())
                    .unwrap()
                    .expect("cuBLASLt path");
                let want = if bias {
                    reference.clone()
                } else {
                    reference.broadcast_sub(&b).unwrap()
                };
                assert_eq!(got.dims(), want.dims());
                let err = rel_err(&got, &want);
                println!("linear {dtype:?} {tokens:?}x{k}->{n} bias {bias}: rel err {err:.2e}");
                let limit = if dtype == DType::F16 { 5e-3 } else { 3e-2 };
                assert!(err < limit, "{dtype:?} {tokens:?} {k} {n} {bias}: {err}");
            }
        }
    }
}

/// The 1x1 convolution as one strided-batched cuBLASLt matmul (one of `convolve`'s ways,
/// `nn::cuda::conv_path`) against the CPU's, at odd sizes and at the UNet's shortcut shape.
#[test]
fn conv1x1_cublaslt_matches_the_cpu() {
    use vivify_core::nn::cuda::linear::channel_matmul;
    let dev = cuda();
    // (batch, in channels, pixels, out channels)
    for (n, k, p, m) in [(3, 24, 63, 40), (1, 8, 16, 8), (16, 320, 1024, 640)] {
        let x = Tensor::randn(0f32, 1., (n, k, p), &Device::Cpu).unwrap();
        let w =
            (Tensor::randn(0f32, 1., (m, k), &Device::Cpu).unwrap() / (k as f64).sqrt()).unwrap();
        let want = w.broadcast_matmul(&x).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
            let got = channel_matmul(&on(&x), &on(&w))
                .unwrap()
                .expect("cuBLASLt path");
            assert_eq!(got.dims(), want.dims());
            let err = rel_err(&got, &want);
            println!("channel matmul {dtype:?} {n}x{k}x{p} -> {m}: rel err {err:.2e}");
            let limit = if dtype == DType::F16 { 5e-3 } else { 3e-2 };
            assert!(err < limit, "{dtype:?} {:?}: {err}", (n, k, p, m));
        }
    }
}

/// The fused GEGLU against value · GELU(gate) on the CPU.
#[test]
fn geglu_matches_the_cpu() {
    use vivify_core::nn::cuda::geglu::geglu;
    let dev = cuda();
    // The UNet's width (16 bytes per access, flat over the rows) and one that is not a multiple
    // of 8 (a block per row, pairs).
    for (rows, half) in [(3 * 77, 1280), (50, 1278)] {
        let h = Tensor::randn(0f32, 2., (rows, 2 * half), &Device::Cpu).unwrap();
        let value = h.narrow(1, 0, half).unwrap();
        let gate = h.narrow(1, half, half).unwrap();
        let reference = (value * gate.gelu_erf().unwrap()).unwrap();
        for dtype in [DType::F16, DType::BF16] {
            let got = geglu(&h.to_dtype(dtype).unwrap().to_device(&dev).unwrap())
                .unwrap()
                .expect("fused path");
            assert_eq!(got.dims(), reference.dims());
            let err = rel_err(&got, &reference);
            println!("geglu {dtype:?} {rows}x{half}: rel err {err:.2e}");
            let limit = if dtype == DType::F16 { 2e-3 } else { 2e-2 };
            assert!(err < limit, "{dtype:?} {rows}x{half}: {err}");
        }
    }
}

/// The element-wise kernels (transpose, per-channel add, add) against candle on the CPU.
#[test]
fn elementwise_matches_the_cpu() {
    use vivify_core::nn::cuda::elementwise::{add, channel_add, transpose_last2};
    let dev = cuda();
    for dtype in [DType::F16, DType::BF16] {
        let on = |t: &Tensor| t.to_dtype(dtype).unwrap().to_device(&dev).unwrap();
        let limit = if dtype == DType::F16 { 2e-3 } else { 2e-2 };
        // Spatial sizes with and without a multiple of 8 (the vector path and the scalar one),
        // tile edges (33, 70) for the transpose.
        for (n, c, s) in [(3, 40, 64), (2, 33, 70), (4, 8, 220)] {
            let x = Tensor::randn(0f32, 1., (n, c, s), &Device::Cpu).unwrap();
            let r = Tensor::randn(0f32, 1., (n, c, s), &Device::Cpu).unwrap();
            let bias = Tensor::randn(0f32, 1., c, &Device::Cpu).unwrap();
            let per_sample = Tensor::randn(0f32, 1., (n, c), &Device::Cpu).unwrap();

            let t = transpose_last2(&on(&x)).unwrap().expect("fused path");
            let want = x.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(t.dims(), want.dims());
            assert_eq!(rel_err(&t, &want.to_dtype(dtype).unwrap()), 0.0);

            let got = channel_add(&on(&x), &on(&bias), None)
                .unwrap()
                .expect("fused path");
            let want = x.broadcast_add(&bias.reshape((1, c, 1)).unwrap()).unwrap();
            let err = rel_err(&got, &want);
            assert!(err < limit, "channel_add {dtype:?} {:?}: {err}", (n, c, s));

            let got = channel_add(&on(&x), &on(&per_sample), Some(&on(&r)))
                .unwrap()
                .expect("fused path");
            let want = (x
                .broadcast_add(&per_sample.reshape((n, c, 1)).unwrap())
                .unwrap()
                + &r)
                .unwrap();
            let err = rel_err(&got, &want);
            assert!(
                err < limit,
                "channel_add+residual {dtype:?} {:?}: {err}",
                (n, c, s)
            );

            let got = add(&on(&x), &on(&r)).unwrap().expect("fused path");
            let err = rel_err(&got, &(&x + &r).unwrap());
            assert!(err < limit, "add {dtype:?} {:?}: {err}", (n, c, s));
            println!("elementwise {dtype:?} {n}x{c}x{s}: ok");
        }
    }
}

/// The kernels that move 16-bit pairs (even sides) against the CPU: the transpose bit for bit,
/// and the per-channel add from channels last (bias and residual) to within rounding. Partial
/// 64-element tiles on either side, the UNet's and VAE's layout changes at full size (channels
/// last and back, the temporal transformer's frames x channels), and odd sides, which take the
/// 32x32 tiles.
#[test]
fn pair_tiles_match_the_cpu() {
    use vivify_core::nn::cuda::elementwise::{channel_add_from_channels_last, transpose_last2};
    let dev = cuda();
    for dtype in [DType::F16, DType::BF16] {
        let limit = if dtype == DType::F16 { 2e-3 } else { 2e-2 };
        for (n, a, b) in [
            (3, 40, 70),
            (2, 130, 66),
            (5, 2, 128),
            (16, 320, 4096),
            (16, 4096, 320),
            (2, 5120, 1024),
            (1, 128, 262_144),
            (2, 33, 70),
            (3, 40, 71),
        ] {
            let randn = |shape: (usize, usize, usize)| {
                Tensor::randn(0f32, 1., shape, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
            };
            let x = randn((n, a, b));
            let on = |t: &Tensor| t.to_device(&dev).unwrap();
            let got = transpose_last2(&on(&x)).unwrap().expect("fused path");
            let want = x.transpose(1, 2).unwrap().contiguous().unwrap();
            assert_eq!(got.dims(), want.dims());
            assert_eq!(rel_err(&got, &want), 0.0, "transpose {dtype:?} {n}x{a}x{b}");

            // x as channels-last (N, S = a, 1, C = b) tokens; bias (C) and residual (N, C, S, 1).
            let (bias, residual) = (randn((1, 1, b)), randn((n, b, a)));
            let got = channel_add_from_channels_last(
                &on(&x.reshape((n, a, 1, b)).unwrap()),
                &on(&bias.flatten_all().unwrap()),
                Some(&on(&residual.reshape((n, b, a, 1)).unwrap())),
            )
            .unwrap()
            .expect("fused path");
            let f32 = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let want = f32(&want)
                .broadcast_add(&f32(&bias).reshape((1, b, 1)).unwrap())
                .unwrap()
                .add(&f32(&residual))
                .unwrap();
            let err = rel_err(&got.reshape((n, b, a)).unwrap(), &want);
            assert!(err < limit, "bias pass {dtype:?} {n}x{a}x{b}: {err}");
        }
    }
}

/// The channels-last handoff's two kernels against the plain ones: GroupNorm(+SiLU) written
/// channels last against the plain kernel then a transpose, and the per-channel add from a
/// channels-last input against a transpose then the plain add (the same sums, so exactly equal).
/// Shapes with partial tiles, tiles across groups (5 and 4 channels per group) and the UNet's.
#[test]
fn channels_last_handoff_kernels_match_the_plain_kernels() {
    use vivify_core::nn::cuda::elementwise::{
        channel_add, channel_add_from_channels_last, transpose_last2,
    };
    use vivify_core::nn::cuda::group_norm::{group_norm, group_norm_channels_last};
    let dev = cuda();
    // (B·F, C, H, W) -> (B, H, W, F·C)
    let to_channels_last = |t: &Tensor, frames: usize| {
        let (bf, c, h, w) = t.dims4().unwrap();
        let b = bf / frames;
        transpose_last2(&t.reshape((b, frames * c, h * w)).unwrap())
            .unwrap()
            .unwrap()
            .reshape((b, h, w, frames * c))
            .unwrap()
    };
    for dtype in [DType::F16, DType::BF16] {
        let randn = |shape: &[usize], mean: f32| {
            Tensor::randn(mean, 1f32, shape, &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap()
        };
        // (N, C, H, W, groups); GroupNorm also with statistics pooled over 4 frames of N / 4
        // videos where N allows (the temporal transformers' norm).
        for (n, c, h, w, g) in [
            (3, 40, 7, 10, 8),
            (4, 128, 33, 17, 32),
            (32, 320, 64, 64, 32),
            (2, 1280, 16, 16, 32),
        ] {
            let x = randn(&[n, c, h, w], 0.5);
            let (weight, bias) = (randn(&[c], 1.), randn(&[c], 0.));
            for (frames, silu) in [(1, false), (1, true), (4, false)] {
                if n % frames != 0 {
                    continue;
                }
                let got = group_norm_channels_last(&x, &weight, &bias, g, frames, 1e-6, silu)
                    .unwrap()
                    .expect("the channels-last kernel");
                let plain = group_norm(&x, &weight, &bias, g, frames, 1e-6, silu)
                    .unwrap()
                    .unwrap();
                assert_eq!(got.dims(), [n / frames, h, w, frames * c]);
                let err = rel_err_on(&dev, &got, &to_channels_last(&plain, frames));
                println!(
                    "channels-last group norm {dtype:?} {n}x{c}x{h}x{w} over {frames} frames, silu {silu}: rel err {err:.2e}"
                );
                assert!(err < 2e-3, "{dtype:?} {:?}: {err}", (n, c, h, w, frames));
            }
            let y = randn(&[n, h, w, c], 0.);
            let residual = randn(&[n, c, h, w], 0.);
            for v in [randn(&[c], 0.), randn(&[n, c], 0.)] {
                for r in [None, Some(&residual)] {
                    let got = channel_add_from_channels_last(&y, &v, r)
                        .unwrap()
                        .expect("the channels-last kernel");
                    let nchw = transpose_last2(&y.reshape((n, h * w, c)).unwrap())
                        .unwrap()
                        .unwrap()
                        .reshape((n, c, h, w))
                        .unwrap();
                    let want = channel_add(&nchw, &v, r).unwrap().unwrap();
                    assert_eq!(got.dims(), [n, c, h, w]);
                    assert_eq!(
                        rel_err_on(&dev, &got, &want),
                        0.0,
                        "{dtype:?} {:?}",
                        (n, c, h, w)
                    );
                }
            }
        }
    }
}

/// The whole handoff (GroupNorm+SiLU channels last, the convolution on it, the bias pass back to
/// NCHW) against the plain path (`forward_plus` after `forward_silu`) at the UNet's and VAE's
/// full-size resnet shapes, with and without the time embedding and the residual.
#[cfg(feature = "cudnn")]
#[test]
fn channels_last_handoff_matches_the_plain_path_at_full_size() {
    use candle_nn::VarBuilder;
    use std::collections::HashMap;
    use vivify_core::nn::conv::{conv2d, norm_conv_channels_last};
    use vivify_core::nn::norm::GroupNorm;
    let dev = cuda();
    let half = |shape: &[usize], mean: f32, std: f32| randn_f16(&dev, shape, mean, std);
    // (N, C_in, H, W, C_out, time embedding and residual)
    for (n, ci, h, w, co, extras) in [
        (32, 320, 64, 64, 320, true),
        (16, 640, 32, 32, 1280, true),
        (1, 512, 256, 256, 512, false),
        (1, 128, 512, 512, 128, false),
    ] {
        let vb = |tensors: Vec<(&str, Tensor)>| {
            let map: HashMap<String, Tensor> = tensors
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            VarBuilder::from_tensors(map, DType::F16, &dev)
        };
        let norm = GroupNorm::new(
            vb(vec![
                ("weight", half(&[ci], 1., 0.1)),
                ("bias", half(&[ci], 0., 0.1)),
            ]),
            32,
            ci,
            1e-6,
        )
        .unwrap();
        let cfg = candle_nn::Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let conv = conv2d(
            ci,
            co,
            3,
            cfg,
            vb(vec![
                ("weight", half(&[co, ci, 3, 3], 0., 0.03)),
                ("bias", half(&[co], 0., 0.1)),
            ]),
        )
        .unwrap();
        let x = half(&[n, ci, h, w], 0.3, 1.);
        let temb = half(&[n, co], 0., 1.);
        let residual = half(&[n, co, h, w], 0., 1.);
        let (extra, res) = match extras {
            true => (Some(&temb), Some(&residual)),
            false => (None, None),
        };
        let got = norm_conv_channels_last(&conv, &norm, &x, extra, res)
            .unwrap()
            .expect("the handoff applies to f16 on CUDA");
        let want = conv
            .forward_plus(&norm.forward_silu(&x).unwrap(), extra, res)
            .unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = rel_err_on(&dev, &got, &want);
        println!("channels-last handoff {n}x{ci}x{h}x{w} -> {co}: rel err {err:.2e}");
        assert!(err < 5e-3, "{:?}: {err}", (n, ci, h, w, co));
    }
}

/// The transposes past 65535 tiles of rows (the grid's y limit), as a full-resolution VAE
/// activation of more than 2048x1024 pixels comes back from channels last: (1, 2.2M, 7) for the
/// 32-row tiles (odd sides), (1, 4.4M, 8) for the 64-row pair tiles; and the channels-last bias
/// pass at 2.2M x 8.
#[test]
fn elementwise_transposes_past_the_grid_limit() {
    use vivify_core::nn::cuda::elementwise::{channel_add_from_channels_last, transpose_last2};
    let dev = cuda();
    let randn = |rows: usize, c: usize| {
        Tensor::randn(0f32, 1., (1, rows, c), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap()
    };
    for (rows, c) in [(2_200_000, 7), (4_400_000, 8)] {
        let x = randn(rows, c);
        let want = x.transpose(1, 2).unwrap().contiguous().unwrap();
        let got = transpose_last2(&x).unwrap().expect("fused path");
        assert_eq!(rel_err_on(&dev, &got, &want), 0.0, "{rows} x {c}");
    }
    let (rows, c) = (2_200_000, 8);
    let x = randn(rows, c);
    let want = x.transpose(1, 2).unwrap().contiguous().unwrap();
    let bias = Tensor::zeros(c, DType::F16, &dev).unwrap();
    let got = channel_add_from_channels_last(&x.reshape((1, 1000, 2200, c)).unwrap(), &bias, None)
        .unwrap()
        .expect("fused path");
    let want = want.reshape((1, c, 1000, 2200)).unwrap();
    assert_eq!(rel_err_on(&dev, &got, &want), 0.0);
}

/// Weights drawn on demand at PyTorch's default scale (±1/√fan_in), norms at 1 ± 0.1.
struct RandomWeights;

impl candle_nn::var_builder::SimpleBackend for RandomWeights {
    fn get(
        &self,
        shape: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let dims = shape.dims();
        let (mean, std) = if name.contains("norm") && name.ends_with("weight") {
            (1., 0.1)
        } else if dims.len() >= 2 {
            (0., 1. / (dims[1..].iter().product::<usize>() as f32).sqrt())
        } else {
            (0., 0.1)
        };
        Tensor::randn(mean, std, shape, dev)?.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("RandomWeights: {name} without a shape")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// The transformers' handoff (GroupNorm written as tokens; proj_out's bias and the residual
/// added while writing NCHW back) against their plain forward at the 512x512x16 UNet's first
/// two levels: spatial (32 frames of 4,096 and 1,024 tokens, cross-attention to 77) and
/// temporal (2 videos of 16 frames, statistics over the frames), f16.
#[test]
fn channels_last_handoff_transformers_match_the_plain_path() {
    use candle_nn::VarBuilder;
    use vivify_core::nn::compute::ComputeOptions;
    use vivify_core::nn::transformer::{Transformer2DModel, TransformerTemporalModel};
    let dev = cuda();
    let vb = VarBuilder::from_backend(Box::new(RandomWeights), DType::F16, dev.clone());
    let opts = ComputeOptions::default();
    let (frames, videos) = (16, 2);
    for (c, side) in [(320, 64), (640, 32)] {
        let heads = c / 64;
        let x = Tensor::randn(0f32, 1., (videos * frames, c, side, side), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let context = Tensor::randn(0f32, 1., (videos * frames, 77, 1024), &dev)
            .unwrap()
            .to_dtype(DType::F16)
            .unwrap();
        let spatial = Transformer2DModel::new(vb.pp("spatial"), c, heads, 64, 32, 1024).unwrap();
        let got = spatial
            .channels_last_handoff(&x, &context, opts)
            .unwrap()
            .expect("the handoff applies to f16 on CUDA");
        let want = spatial.forward_without_handoff(&x, &context, opts).unwrap();
        assert_eq!(got.dims(), want.dims());
        let err = rel_err_on(&dev, &got, &want);
        println!("channels-last handoff, spatial transformer {c}x{side}x{side}: rel err {err:.2e}");
        assert!(err < 5e-3, "spatial {c}: {err}");

        let temporal = TransformerTemporalModel::new(vb.pp("temporal"), c, heads, 64, 32).unwrap();
        let got = temporal
            .channels_last_handoff(&x, frames, opts)
            .unwrap()
            .expect("the handoff applies to f16 on CUDA");
        let want = temporal.forward_without_handoff(&x, frames, opts).unwrap();
        let err = rel_err_on(&dev, &got, &want);
        println!(
            "channels-last handoff, temporal transformer {c}x{side}x{side}: rel err {err:.2e}"
        );
        assert!(err < 5e-3, "temporal {c}: {err}");
    }
}
