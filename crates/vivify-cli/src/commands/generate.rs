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

pub fn run(args: &GenerateArgs) -> Result<ExitCode> {
    if let Some(ext) = args.output.extension().and_then(|e| e.to_str())
        && matches!(
            ext.to_ascii_lowercase().as_str(),
            "mp4" | "gif" | "webm" | "png"
        )
    {
        bail!(
            "--output {}: video files are not written yet; give a directory for PNG frames",
            args.output.display()
        );
    }
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
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating {}", args.output.display()))?;
    for (i, frame) in result.frames.iter().enumerate() {
        let path = args.output.join(format!("{i:04}.png"));
        image::RgbImage::from_raw(frame.width as u32, frame.height as u32, frame.data.clone())
            .context("frame buffer size")?
            .save(&path)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!(
        "wrote {} frames to {}",
        result.frames.len(),
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
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
