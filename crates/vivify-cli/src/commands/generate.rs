//! `vivify generate`: image + prompt -> frames.

use crate::args::GenerateArgs;
use crate::model::{load_models, parse_device};
use crate::progress::steps_bar;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use indicatif::ProgressBar;
use std::path::Path;
use std::process::ExitCode;
use vivify_core::pipeline::generate::{Progress, Stage, generate};
use vivify_core::pipeline::preprocess::load_image;
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
    let device = parse_device(&args.device.device)?;
    let dtype = args.device.dtype.dtype();
    let image =
        load_image(&args.image).with_context(|| format!("--image {}", args.image.display()))?;
    let latents = args.latents.as_deref().map(read_latents).transpose()?;
    let request = GenerationRequest {
        negative_prompt: args.negative_prompt.clone(),
        width: args.width,
        height: args.height,
        frames: args.frames,
        steps: args.steps,
        guidance: args.guidance,
        fps: args.fps,
        seed: args.seed,
        latents,
        decode_chunk: args.decode_chunk,
        ..GenerationRequest::new(image, args.prompt.clone())
    };
    // Bad parameters fail before minutes of model loading.
    request.validate()?;
    let models = load_models(&args.model, dtype, &device)?;

    let mut bar: Option<ProgressBar> = None;
    let result = generate(&models, &request, &device, |event| match event {
        Progress::StageStarted(Stage::Denoise) => bar = Some(steps_bar("denoise", request.steps)),
        Progress::StageStarted(stage) => eprintln!("{} ...", stage.name()),
        Progress::Step(s) => {
            if let Some(b) = &bar {
                b.set_position(s.step as u64);
                b.set_message(format!(
                    "{:.2}s/step",
                    s.elapsed.as_secs_f64() / s.step as f64
                ));
            }
        }
        Progress::Decoded { frames, total } => eprintln!("  decoded {frames}/{total} frames"),
        Progress::StageFinished(stage, took) => {
            if let Some(b) = bar.take() {
                b.finish();
            }
            eprintln!("{} done in {:.2}s", stage.name(), took.as_secs_f64());
        }
    })?;

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
    let metadata = metadata(args, &request, playback_fps, kind, &result.timings);
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
    request: &GenerationRequest,
    playback_fps: f64,
    kind: OutputKind,
    timings: &[(Stage, std::time::Duration)],
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
            "device": args.device.device,
            "dtype": format!("{:?}", args.device.dtype).to_lowercase(),
            "decode_chunk": request.decode_chunk,
        }),
        timings: timings
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
    let map = std::collections::HashMap::from([("latents".to_string(), latents.clone())]);
    candle_core::safetensors::save(&map, path)
        .with_context(|| format!("writing {}", path.display()))
}
