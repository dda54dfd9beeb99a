//! `vivify generate`: image + prompt -> frames.

use crate::args::GenerateArgs;
use crate::auto_plan::{self, AutoPlan};
use crate::model::model_store;
use crate::plan_overrides;
use crate::progress::steps_bar;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use vivify_core::pipeline::components::Components;
use vivify_core::pipeline::generate::{
    Event, GenerateOptions, Generation, Progress, Stage, generate_from, resume_from,
};
use vivify_core::pipeline::preprocess::load_image;
use vivify_core::pipeline::recovery::{BudgetGuard, Checkpoint, FaultInjector, StagePlan};
use vivify_core::pipeline::request::GenerationRequest;
use vivify_video::metadata::OutputInfo;
use vivify_video::{
    Frames, Metadata, ModelInfo, Mp4Options, OutputKind, OutputOptions, Parameters, StageTiming,
    write_output,
};

pub fn run(args: &GenerateArgs) -> Result<ExitCode> {
    let playback_fps = args.playback_fps.unwrap_or(f64::from(args.fps));
    if !(playback_fps.is_finite() && playback_fps > 0.0 && playback_fps <= 1000.0) {
        bail!("--playback-fps {playback_fps}: must be above 0 and at most 1000");
    }
    let kind = OutputKind::from_path(&args.output);
    let (device, dtype) = args.device.resolve()?;
    let image =
        load_image(&args.image).with_context(|| format!("--image {}", args.image.display()))?;
    let latents = args.latents.as_deref().map(read_latents).transpose()?;
    let checkpoint = args.resume.as_deref().map(Checkpoint::load).transpose()?;
    let mut request = match &checkpoint {
        // A resumed run is the saved request, with the image given again.
        Some(cp) => cp.meta.request(image),
        None => GenerationRequest {
            negative_prompt: args.negative_prompt.clone(),
            width: args.width,
            height: args.height,
            frames: args.frames,
            steps: args.steps,
            guidance: args.guidance,
            fps: args.fps,
            seed: args.seed,
            latents,
            decode_chunk: args
                .decode_chunk
                .unwrap_or(vivify_core::pipeline::request::DEFAULT_DECODE_CHUNK),
            ..GenerationRequest::new(image, args.prompt.clone())
        },
    };
    let budget = args
        .memory_budget
        .as_deref()
        .map(vivify_core::memory::parse_bytes)
        .transpose()?;
    // Bad parameters fail before minutes of model loading.
    plan_overrides::apply(&mut request.plan.clone(), &args.plan)?;
    request.validate()?;
    let store = model_store(&args.model, dtype, &device)?;
    let configs = store
        .configs()
        .with_context(|| format!("--model {}", args.model.model))?;
    // A resumed run goes on with the plan its checkpoint saved; a new one asks the planner.
    let auto_plan = match &checkpoint {
        Some(_) => {
            plan_overrides::apply(&mut request.plan, &args.plan)?;
            None
        }
        None => auto_plan::apply(
            &mut request,
            &configs,
            budget,
            args.decode_chunk,
            &args.plan,
            &device,
            dtype,
        )?,
    };
    request.validate()?;
    // From the store: an all-resident plan loads every model before any stage runs (and frees
    // them if it steps down to staged weights), other plans load each stage's own.
    let components = Components::Store(&store);

    let guard = args.simulate_denoise_oom.map(|rungs| {
        BudgetGuard::after_rungs(Stage::Denoise, StagePlan::of(&request), rungs, true)
    });
    let options = GenerateOptions {
        injector: guard.as_ref().map(|g| g as &dyn FaultInjector),
        checkpoint_dir: Some(args.checkpoint_dir.clone().unwrap_or_else(|| {
            let parent = args.output.parent().unwrap_or(Path::new("."));
            if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_path_buf()
            }
        })),
        after_step: None,
    };
    let mut bar: Option<ProgressBar> = None;
    let on_event = |event: Event| match event {
        Event::StepDown(s) => eprintln!(
            "{}: out of memory, {} -> {} ({})",
            s.stage.name(),
            s.from,
            s.to,
            s.reason
        ),
        Event::Progress(p) => match p {
            Progress::StageStarted(Stage::Denoise) => {
                bar = Some(steps_bar("denoise", request.steps))
            }
            Progress::StageStarted(stage) => eprintln!("{} ...", stage.name()),
            Progress::Step(s) => {
                let pace = s.elapsed.as_secs_f64() / s.step as f64;
                match &bar {
                    // Not a terminal (a log file, a service): one line per step instead.
                    Some(b) if b.is_hidden() => eprintln!(
                        "  step {}/{}: {:.2}s elapsed, {pace:.2}s/step, about {:.0}s left",
                        s.step,
                        s.total,
                        s.elapsed.as_secs_f64(),
                        s.eta().as_secs_f64()
                    ),
                    Some(b) => {
                        b.set_position(s.step as u64);
                        b.set_message(format!("{pace:.2}s/step"));
                    }
                    None => {}
                }
            }
            Progress::Decoded { frames, total } => eprintln!("  decoded {frames}/{total} frames"),
            Progress::StageFinished(stage, took) => {
                if let Some(b) = bar.take() {
                    b.finish();
                }
                eprintln!("{} done in {:.2}s", stage.name(), took.as_secs_f64());
            }
        },
    };
    vivify_core::device::reset_peak_memory(&device)?;
    let result = match &args.resume {
        Some(file) => resume_from(components, &request, file, &device, &options, on_event)?,
        None => generate_from(components, &request, &device, &options, on_event)?,
    };

    let peak = vivify_core::device::peak_memory(&device)?;
    if let Some(bytes) = peak {
        eprintln!(
            "peak device memory: {:.2} GiB",
            bytes as f64 / (1u64 << 30) as f64
        );
    }
    if let Some(path) = &args.output_latents {
        write_latents(path, &result.latents)?;
    }
    let first = result.frames.first().context("no frames generated")?;
    let frames = Frames {
        width: first.width,
        height: first.height,
        frames: result.frames.iter().map(|f| f.data.as_slice()).collect(),
        fps: playback_fps,
    };
    let options = OutputOptions {
        mp4: Mp4Options {
            qp: args.quality,
            ..Mp4Options::default()
        },
        gif_dither: args.gif_dither,
    };
    let metadata = metadata(
        args,
        (&device, dtype, peak),
        &request,
        playback_fps,
        kind,
        &result,
        auto_plan.as_ref(),
    );
    let encode = std::time::Instant::now();
    let sidecar = write_output(&args.output, &frames, &options, Some(&metadata))
        .with_context(|| format!("--output {}", args.output.display()))?;
    eprintln!(
        "wrote {} frames ({}, {playback_fps} fps) to {} in {:.2}s; metadata in {}",
        result.frames.len(),
        kind.name(),
        args.output.display(),
        encode.elapsed().as_secs_f64(),
        sidecar.map_or_else(String::new, |p| p.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}

/// The sidecar: everything needed to make the same video again.
fn metadata(
    args: &GenerateArgs,
    (device, dtype, peak): (&candle_core::Device, candle_core::DType, Option<u64>),
    request: &GenerationRequest,
    playback_fps: f64,
    kind: OutputKind,
    result: &Generation,
    auto_plan: Option<&AutoPlan>,
) -> Metadata {
    let settings = match kind {
        OutputKind::Mp4 => serde_json::json!({
            "codec": "h264", "profile": "constrained baseline", "pix_fmt": "yuv420p",
            "colour": "bt601 limited range", "qp": args.quality,
        }),
        OutputKind::Gif => serde_json::json!({ "dither": args.gif_dither, "loop": "forever" }),
        OutputKind::PngDir => serde_json::json!({ "pattern": "%04d.png" }),
    };
    Metadata {
        vivify_version: env!("CARGO_PKG_VERSION").to_string(),
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        seed: request.seed,
        parameters: Parameters {
            width: request.width,
            height: request.height,
            frames: request.frames,
            steps: request.steps,
            guidance: request.guidance,
            fps: request.fps,
            playback_fps,
            decode_chunk: request.decode_chunk,
            latents: args.latents.as_ref().map(|p| p.display().to_string()),
        },
        model: ModelInfo {
            id: args.model.model.clone(),
            revision: args.model.revision.clone(),
        },
        plan: serde_json::json!({
            "device": crate::args::device_label(device),
            "dtype": format!("{dtype:?}").to_lowercase(),
            "peak_device_bytes": peak,
            "execution_plan": result.final_plan(),
            "step_downs": result.step_downs,
            "planner": auto_plan.map(AutoPlan::to_json),
        }),
        timings: result
            .timings
            .iter()
            .map(|(stage, took)| StageTiming {
                stage: stage.name().to_string(),
                seconds: took.as_secs_f64(),
            })
            .collect(),
        output: OutputInfo {
            format: kind.name().to_string(),
            path: args.output.display().to_string(),
            settings,
        },
    }
}

fn read_latents(path: &Path) -> Result<Tensor> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)
        .with_context(|| format!("--latents {}", path.display()))?;
    let latents = tensors
        .get("latents")
        .with_context(|| format!("--latents {}: no tensor named `latents`", path.display()))?;
    Ok(latents.to_dtype(DType::F32)?)
}

fn write_latents(path: &Path, latents: &Tensor) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("--output-latents: creating {}", parent.display()))?;
    }
    let map = std::collections::HashMap::from([("latents".to_string(), latents.clone())]);
    candle_core::safetensors::save(&map, path)
        .with_context(|| format!("writing {}", path.display()))
}
