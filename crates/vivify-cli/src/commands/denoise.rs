//! `vivify denoise`: the denoising stage on its own, from seeded noise to final latents.
//!
//! Until the text/image encoders and the VAE are ported, the conditioning is seeded random
//! data shaped exactly as the encoders will produce it.

use crate::args::DenoiseArgs;
use crate::model::{load_unet, parse_device};
use crate::progress::steps_bar;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use std::process::ExitCode;
use vivify_core::pipeline::denoise::{Conditioning, denoise, uses_guidance};
use vivify_core::scheduler::{DdimScheduler, gaussian_noise};

/// Text tokens the CLIP tokenizer pads every prompt to.
const TEXT_TOKENS: usize = 77;

pub fn run(args: &DenoiseArgs) -> Result<ExitCode> {
    for (name, v) in [("--width", args.width), ("--height", args.height)] {
        if v == 0 || v % 8 != 0 {
            bail!("{name} {v}: must be a positive multiple of 8");
        }
    }
    if args.frames < 2 {
        bail!("--frames {}: must be at least 2", args.frames);
    }
    let device = parse_device(&args.device.device)?;
    let dtype = args.device.dtype.dtype();
    let (unet, scheduler_config) = load_unet(&args.model, dtype, &device)?;
    let mut scheduler = DdimScheduler::new(scheduler_config)?;
    scheduler.set_timesteps(args.steps)?;

    let (h, w, f) = (args.height / 8, args.width / 8, args.frames);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    let latents = match &args.latents {
        Some(path) => read_latents(path, (1, 4, f, h, w), &device)?,
        None => gaussian_noise(&mut rng, (1, 4, f, h, w), &device)?,
    };
    let cond = random_conditioning(
        &mut rng,
        unet.config.cross_attention_dim,
        (f, h, w),
        uses_guidance(args.guidance),
        &device,
    )?;

    let bar = steps_bar("denoise", args.steps);
    let out = denoise(
        &unet,
        &scheduler,
        latents,
        &cond,
        args.guidance,
        args.fps,
        |p| {
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "t={} {:.2}s/step",
                p.timestep,
                p.elapsed.as_secs_f64() / p.step as f64
            ));
        },
    )?;
    bar.finish();

    let out = out.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), out)]),
        &args.output_latents,
    )
    .with_context(|| format!("writing {}", args.output_latents.display()))?;
    eprintln!("wrote {}", args.output_latents.display());
    Ok(ExitCode::SUCCESS)
}

fn read_latents(
    path: &std::path::Path,
    shape: (usize, usize, usize, usize, usize),
    device: &Device,
) -> Result<Tensor> {
    let tensors = candle_core::safetensors::load(path, device)
        .with_context(|| format!("--latents {}", path.display()))?;
    let latents = tensors
        .get("latents")
        .with_context(|| format!("--latents {}: no tensor named `latents`", path.display()))?;
    let expected = [shape.0, shape.1, shape.2, shape.3, shape.4];
    if latents.dims() != expected {
        bail!(
            "--latents {}: shape {:?}, expected {expected:?} (1, 4, frames, height/8, width/8)",
            path.display(),
            latents.dims()
        );
    }
    Ok(latents.to_dtype(DType::F32)?)
}

/// Seeded stand-in for the encoders' outputs, laid out as the pipeline builds them: rows
/// [negative, positive] with a zero negative image embedding; image latents whose frame 0 is
/// the "encoded image" and frame k the constant k/(F-1).
fn random_conditioning(
    rng: &mut rand_chacha::ChaCha8Rng,
    cross: usize,
    (f, h, w): (usize, usize, usize),
    guided: bool,
    device: &Device,
) -> Result<Conditioning> {
    let rows = if guided { 2 } else { 1 };
    let text = gaussian_noise(rng, (rows, TEXT_TOKENS, cross), device)?;
    let image = gaussian_noise(rng, (1, cross), device)?;
    let image_embeddings = if guided {
        Tensor::cat(&[&image.zeros_like()?, &image], 0)?
    } else {
        image
    };
    let frame0 = gaussian_noise(rng, (1, 4, 1, h, w), device)?;
    let mut frames = vec![frame0];
    for k in 1..f {
        frames.push(Tensor::full(
            k as f32 / (f - 1) as f32,
            (1, 4, 1, h, w),
            device,
        )?);
    }
    let image_latents = Tensor::cat(&frames, 2)?;
    let image_latents = if guided {
        Tensor::cat(&[&image_latents, &image_latents], 0)?
    } else {
        image_latents
    };
    Ok(Conditioning {
        encoder_hidden_states: text,
        image_embeddings,
        image_latents,
    })
}
