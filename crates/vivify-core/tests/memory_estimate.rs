//! The memory estimator against the real peak: a counting global allocator measures what each
//! stage allocates on the CPU (f32) for a mid-size random config, and the prediction must be
//! within ±15% of it for every case.

use candle_core::{DType, Device, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use vivify_core::config::UNetConfig;
use vivify_core::memory::{Backend, ModelConfigs, RequestShape, estimate_for};
use vivify_core::models::clip::{ClipTextConfig, ClipVisionConfig};
use vivify_core::models::unet::streaming::StreamedUNet;
use vivify_core::models::unet::{I2VGenXLUNet, UNetModel};
use vivify_core::models::vae::{AutoencoderKL, VaeConfig};
use vivify_core::nn::compute::ComputeOptions;
use vivify_core::pipeline::denoise::{Conditioning, denoise};
use vivify_core::pipeline::plan::ExecutionPlan;
use vivify_core::pipeline::plan::Residency;
use vivify_core::scheduler::{DdimConfig, DdimScheduler};
use vivify_core::weights::{Checkpoint, TensorSpec, random_unet, random_weights, unet_spec};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
    }
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            if new_size >= layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size
                    - layout.size();
                PEAK.fetch_max(now, Ordering::SeqCst);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the allocator is global.
static SERIAL: Mutex<()> = Mutex::new(());

/// Peak bytes allocated by `f` above what was allocated when it started.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let out = f();
    (out, PEAK.load(Ordering::SeqCst) - base)
}

/// The published architecture at 1/5 of its width (64, 128, 128, 128), two layers per block.
fn mid_unet() -> UNetConfig {
    UNetConfig {
        block_out_channels: vec![64, 128, 128, 128],
        norm_num_groups: 32,
        cross_attention_dim: 128,
        attention_head_dim: 32,
        ..UNetConfig::default()
    }
}

/// The published VAE at 1/4 width.
fn mid_vae() -> VaeConfig {
    VaeConfig {
        block_out_channels: vec![32, 64, 128, 128],
        norm_num_groups: 16,
        ..VaeConfig::i2vgen_xl()
    }
}

fn configs() -> ModelConfigs {
    ModelConfigs {
        unet: mid_unet(),
        vae: mid_vae(),
        text: ClipTextConfig {
            hidden_size: 128,
            intermediate_size: 256,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            ..ClipTextConfig::default()
        },
        vision: ClipVisionConfig {
            hidden_size: 64,
            intermediate_size: 128,
            projection_dim: 128,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            ..ClipVisionConfig::default()
        },
    }
}

struct Row {
    what: String,
    predicted: u64,
    measured: usize,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.predicted as f64 / self.measured as f64
    }
}

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let _ = seed;
    Tensor::randn(0f32, 1f32, shape, &Device::Cpu).unwrap()
}

/// One DDIM step of `unet` on random conditioning and latents of `req`'s shape.
fn run_denoise(unet: &dyn UNetModel, u: &UNetConfig, req: RequestShape, plan: ExecutionPlan) {
    let (h, w, f) = (req.height / 8, req.width / 8, req.frames);
    let rows = if req.guidance { 2 } else { 1 };
    let mut scheduler = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    scheduler.set_timesteps(1).unwrap();
    let cond = Conditioning {
        encoder_hidden_states: rand(&[rows, 77, u.cross_attention_dim], 1),
        image_embeddings: rand(&[rows, u.cross_attention_dim], 2),
        image_latents: rand(&[rows, 4, f, h, w], 3),
    };
    let latents = rand(&[1, 4, f, h, w], 4);
    let guidance = if req.guidance { 9.0 } else { 1.0 };
    denoise(
        unet,
        &scheduler,
        latents,
        &cond,
        guidance,
        16.0,
        plan,
        |_| {},
    )
    .unwrap();
}

/// The denoise stage: the UNet's weights, the conditioning and latents, one DDIM step.
fn denoise_case(models: &ModelConfigs, req: RequestShape, plan: ExecutionPlan) -> Row {
    let dev = Device::Cpu;
    let u = &models.unet;
    let f = req.frames;
    let (_, measured) = measure(|| {
        let unet = random_unet(u, 7, DType::F32, &dev).unwrap();
        // the weights are made in f32 vectors first: start the count after they are built
        PEAK.store(CURRENT.load(Ordering::SeqCst), Ordering::SeqCst);
        run_denoise(&unet, u, req, plan)
    });
    let est = estimate_for(models, &req, &plan, DType::F32, Backend::Cpu).unwrap();
    Row {
        what: format!(
            "denoise {}x{}x{} {} {}",
            req.width,
            req.height,
            f,
            if req.guidance { "cfg" } else { "nocfg" },
            describe(&plan)
        ),
        predicted: est.denoise.peak_own_weights(),
        measured,
    }
}

/// Decoding as generate's decode stage does it: final latents, frames in chunks, gathered and
/// converted to bytes.
fn run_decode(vae: &AutoencoderKL, v: &VaeConfig, req: RequestShape, plan: ExecutionPlan) {
    let (h, w, f) = (req.height / 8, req.width / 8, req.frames);
    let latents = rand(&[1, 4, f, h, w], 5);
    let z = (&latents / v.scaling_factor).unwrap();
    let z = z
        .permute((0, 2, 1, 3, 4))
        .unwrap()
        .reshape((f, 4, h, w))
        .unwrap();
    let mut decoded = Vec::new();
    let mut done = 0;
    while done < f {
        let n = req.decode_chunk.min(f - done);
        decoded.push(
            vae.decode_with(&z.narrow(0, done, n).unwrap(), plan.compute)
                .unwrap(),
        );
        done += n;
    }
    let video = Tensor::cat(&decoded, 0).unwrap();
    let video = ((video / 2.0).unwrap() + 0.5)
        .unwrap()
        .clamp(0f32, 1f32)
        .unwrap();
    let video = (video * 255.0)
        .unwrap()
        .round()
        .unwrap()
        .to_dtype(DType::U8)
        .unwrap();
    video.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
}

/// Random weights for `spec` saved as safetensors in `dir`: what staged and streamed runs read
/// (memory-mapped, so only what they load counts).
fn weights_file(dir: &Path, name: &str, spec: &[TensorSpec], seed: u64) -> PathBuf {
    let weights = random_weights(spec, seed, DType::F32, &Device::Cpu).unwrap();
    let path = dir.join(format!("{name}.safetensors"));
    candle_core::safetensors::save(&weights, &path).unwrap();
    path
}

/// A staged run's denoise and decode stages: the UNet loaded from its file, one step, freed;
/// then the VAE loaded and the frames decoded. The peak is the larger stage's, each holding
/// its own model only.
fn staged_case(models: &ModelConfigs, dir: &Path, req: RequestShape, plan: ExecutionPlan) -> Row {
    let (u, v) = (&models.unet, &models.vae);
    let (unet_spec, vae_spec) = (unet_spec(u).unwrap(), AutoencoderKL::spec(v).unwrap());
    let unet_file = weights_file(dir, "unet", &unet_spec, 7);
    let vae_file = weights_file(dir, "vae", &vae_spec, 9);
    let load = |file: &Path, spec: &[TensorSpec]| {
        Checkpoint::open(&[file.to_path_buf()])
            .unwrap()
            .var_builder(spec, DType::F32, &Device::Cpu)
            .unwrap()
    };
    let (_, measured) = measure(|| {
        let unet = I2VGenXLUNet::new(u, load(&unet_file, &unet_spec)).unwrap();
        run_denoise(&unet, u, req, plan);
        drop(unet);
        let vae = AutoencoderKL::new(v, load(&vae_file, &vae_spec)).unwrap();
        run_decode(&vae, v, req, plan)
    });
    let est = estimate_for(models, &req, &plan, DType::F32, Backend::Cpu).unwrap();
    Row {
        what: format!(
            "staged denoise+decode {}x{}x{} chunk {} {}",
            req.width,
            req.height,
            req.frames,
            req.decode_chunk,
            describe(&plan)
        ),
        predicted: est.denoise.peak().max(est.decode.peak()),
        measured,
    }
}

/// The denoise stage with the UNet streamed from its memory-mapped file: the trunk and a
/// window of blocks on the heap, one DDIM step.
fn streamed_case(models: &ModelConfigs, dir: &Path, req: RequestShape, plan: ExecutionPlan) -> Row {
    let u = &models.unet;
    let spec = unet_spec(u).unwrap();
    let file = weights_file(dir, "unet", &spec, 7);
    let blocks = plan.residency.streamed_blocks().expect("a streamed plan");
    let (_, measured) = measure(|| {
        let host = Checkpoint::open(std::slice::from_ref(&file))
            .unwrap()
            .var_builder(&spec, DType::F32, &Device::Cpu)
            .unwrap();
        let unet = StreamedUNet::new(u, host, blocks).unwrap();
        run_denoise(&unet, u, req, plan)
    });
    let est = estimate_for(models, &req, &plan, DType::F32, Backend::Cpu).unwrap();
    Row {
        what: format!(
            "streamed denoise {}x{}x{} {}",
            req.width,
            req.height,
            req.frames,
            describe(&plan)
        ),
        predicted: est.denoise.peak(),
        measured,
    }
}

/// The decode stage: VAE weights, the final latents, decode in chunks, the frames gathered.
fn decode_case(models: &ModelConfigs, req: RequestShape, plan: ExecutionPlan) -> Row {
    let dev = Device::Cpu;
    let v = &models.vae;
    let f = req.frames;
    let (_, measured) = measure(|| {
        let spec = AutoencoderKL::spec(v).unwrap();
        let weights = random_weights(&spec, 9, DType::F32, &dev).unwrap();
        let vae = AutoencoderKL::new(
            v,
            candle_nn::VarBuilder::from_tensors(weights, DType::F32, &dev),
        )
        .unwrap();
        PEAK.store(CURRENT.load(Ordering::SeqCst), Ordering::SeqCst);
        run_decode(&vae, v, req, plan)
    });
    let est = estimate_for(models, &req, &plan, DType::F32, Backend::Cpu).unwrap();
    Row {
        what: format!(
            "decode {}x{}x{} chunk {} {}",
            req.width,
            req.height,
            f,
            req.decode_chunk,
            describe(&plan)
        ),
        predicted: est.decode.peak_own_weights(),
        measured,
    }
}

fn describe(plan: &ExecutionPlan) -> String {
    let c = plan.compute;
    let mut parts = Vec::new();
    parts.extend(plan.residency.code());
    if plan.sequential_guidance {
        parts.push("seq".to_string());
    }
    let named = [
        ("q", c.attention_query_chunk),
        ("h", c.attention_head_chunk),
        ("ff", c.feed_forward_chunk),
        ("sf", c.spatial_frame_chunk),
        ("tp", c.temporal_pixel_chunk),
        ("cf", c.conv_frame_chunk),
        ("vb", c.vae_row_band),
    ];
    for (name, v) in named {
        if let Some(v) = v {
            parts.push(format!("{name}{v}"));
        }
    }
    if parts.is_empty() {
        "plain".into()
    } else {
        parts.join(",")
    }
}

fn shape(width: usize, height: usize, frames: usize, guidance: bool) -> RequestShape {
    RequestShape {
        width,
        height,
        frames,
        guidance,
        decode_chunk: 1,
    }
}

#[test]
fn predicted_peaks_are_within_15_percent_of_measured() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let models = configs();
    let plain = ExecutionPlan::default();
    let chunked = |c: ComputeOptions| ExecutionPlan {
        compute: c,
        ..plain
    };
    let seq = ExecutionPlan {
        sequential_guidance: true,
        ..plain
    };
    let mut rows = vec![
        denoise_case(&models, shape(256, 256, 8, true), plain),
        denoise_case(&models, shape(256, 256, 8, false), plain),
        denoise_case(&models, shape(256, 256, 8, true), seq),
        denoise_case(&models, shape(320, 192, 4, true), plain),
        denoise_case(&models, shape(128, 128, 16, true), plain),
        denoise_case(
            &models,
            shape(256, 256, 8, true),
            chunked(ComputeOptions {
                attention_query_chunk: Some(256),
                attention_head_chunk: Some(4),
                feed_forward_chunk: Some(256),
                ..Default::default()
            }),
        ),
        denoise_case(
            &models,
            shape(256, 256, 8, true),
            chunked(ComputeOptions {
                spatial_frame_chunk: Some(2),
                temporal_pixel_chunk: Some(256),
                ..Default::default()
            }),
        ),
        denoise_case(
            &models,
            shape(256, 256, 8, true),
            chunked(ComputeOptions {
                conv_frame_chunk: Some(2),
                ..Default::default()
            }),
        ),
        denoise_case(
            &models,
            shape(384, 256, 6, true),
            ExecutionPlan {
                sequential_guidance: true,
                compute: ComputeOptions {
                    attention_query_chunk: Some(512),
                    feed_forward_chunk: Some(512),
                    spatial_frame_chunk: Some(3),
                    temporal_pixel_chunk: Some(512),
                    attention_head_chunk: None,
                    conv_frame_chunk: None,
                    vae_row_band: None,
                },
                ..plain
            },
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let residency = |residency| ExecutionPlan { residency, ..plain };
    rows.push(staged_case(
        &models,
        dir.path(),
        RequestShape {
            decode_chunk: 2,
            ..shape(256, 256, 4, true)
        },
        residency(Residency::Staged),
    ));
    for resident_blocks in [1, 2] {
        rows.push(streamed_case(
            &models,
            dir.path(),
            shape(256, 256, 8, true),
            residency(Residency::StreamedUnet { resident_blocks }),
        ));
    }
    rows.push(decode_case(&models, shape(256, 256, 4, true), plain));
    rows.push(decode_case(
        &models,
        RequestShape {
            decode_chunk: 4,
            ..shape(256, 192, 4, true)
        },
        plain,
    ));
    rows.push(decode_case(
        &models,
        RequestShape {
            decode_chunk: 2,
            ..shape(256, 256, 2, true)
        },
        chunked(ComputeOptions {
            vae_row_band: Some(32),
            ..Default::default()
        }),
    ));
    println!(
        "{:<58} {:>12} {:>12} {:>7}",
        "case", "predicted", "measured", "ratio"
    );
    for r in &rows {
        println!(
            "{:<58} {:>12} {:>12} {:>7.3}",
            r.what,
            r.predicted,
            r.measured,
            r.ratio()
        );
    }
    let bad: Vec<&Row> = rows
        .iter()
        .filter(|r| (r.ratio() - 1.0).abs() > 0.15)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} cases off by more than 15%: {:?}",
        bad.len(),
        rows.len(),
        bad.iter().map(|r| (&r.what, r.ratio())).collect::<Vec<_>>()
    );
}
