//! Image + prompt -> frames: diffusers' `I2VGenXLPipeline.__call__`, stage by stage.

use super::denoise::{Conditioning, StepProgress, denoise, uses_guidance};
use super::models::I2VGenXLModels;
use super::pillow_resize::Rgb8;
use super::preprocess::{clip_pixel_values, vae_pixel_values};
use super::request::GenerationRequest;
use crate::Result;
use crate::scheduler::{DdimScheduler, gaussian_noise};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    EncodeText,
    EncodeImage,
    Denoise,
    Decode,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::EncodeText => "encode text",
            Stage::EncodeImage => "encode image",
            Stage::Denoise => "denoise",
            Stage::Decode => "decode",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Progress {
    StageStarted(Stage),
    Step(StepProgress),
    /// One decode chunk done: frames decoded so far of the total.
    Decoded {
        frames: usize,
        total: usize,
    },
    StageFinished(Stage, Duration),
}

/// What a generation produces.
#[derive(Debug, Clone)]
pub struct Generation {
    pub frames: Vec<Rgb8>,
    /// Final latents before decoding, (1, 4, F, h, w) f32 on the CPU.
    pub latents: Tensor,
    pub timings: Vec<(Stage, Duration)>,
}

struct StageClock<'a, F: FnMut(Progress)> {
    on_progress: &'a mut F,
    timings: Vec<(Stage, Duration)>,
}

impl<F: FnMut(Progress)> StageClock<'_, F> {
    fn run<T>(&mut self, stage: Stage, work: impl FnOnce(&mut F) -> Result<T>) -> Result<T> {
        (self.on_progress)(Progress::StageStarted(stage));
        let start = Instant::now();
        let out = work(self.on_progress)?;
        let took = start.elapsed();
        self.timings.push((stage, took));
        (self.on_progress)(Progress::StageFinished(stage, took));
        Ok(out)
    }
}

/// Encodes [negative, positive] prompts (positive only without guidance): (rows, 77, hidden).
fn encode_text(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    device: &Device,
) -> Result<Tensor> {
    let mut prompts = Vec::new();
    if uses_guidance(req.guidance) {
        prompts.push(req.negative_prompt.as_str());
    }
    prompts.push(req.prompt.as_str());
    let mut ids = Vec::new();
    for p in &prompts {
        ids.extend(models.tokenizer.encode(p)?);
    }
    let ids = Tensor::from_vec(ids, (prompts.len(), models.tokenizer.max_length()), device)?;
    Ok(models.text_encoder.forward(&ids)?)
}

/// The CLIP image embedding (zeros in the negative row) and the image latents: frame 0 the
/// VAE's posterior mean of the image (scaled), frame k the constant k/(F-1).
fn encode_image(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let guided = uses_guidance(req.guidance);
    let clip_input =
        clip_pixel_values(&req.image, req.width, device)?.to_dtype(models.image_encoder.dtype())?;
    let embedding = models.image_encoder.forward(&clip_input)?;
    let embeddings = if guided {
        Tensor::cat(&[&embedding.zeros_like()?, &embedding], 0)?
    } else {
        embedding
    };

    let vae_input = vae_pixel_values(&req.image, req.width, req.height, device)?
        .to_dtype(models.vae.dtype())?;
    let latent = (models.vae.encode_mean(&vae_input)? * models.vae.config.scaling_factor)?;
    let latent = latent.unsqueeze(2)?;
    let mut frames = vec![latent.clone()];
    for k in 1..req.frames {
        frames.push((latent.ones_like()? * (k as f64 / (req.frames - 1) as f64))?);
    }
    let latents = Tensor::cat(&frames, 2)?;
    let latents = if guided {
        Tensor::cat(&[&latents, &latents], 0)?
    } else {
        latents
    };
    Ok((embeddings, latents))
}

/// (x / 2 + 0.5).clamp(0, 1) · 255, rounded: frames (F, 3, H, W) -> RGB8 images.
fn to_frames(video: &Tensor) -> Result<Vec<Rgb8>> {
    let (f, _, h, w) = video.dims4()?;
    let video =
        ((video.to_dtype(DType::F32)?.to_device(&Device::Cpu)? / 2.0)? + 0.5)?.clamp(0f32, 1f32)?;
    let video = (video * 255.0)?.round()?.to_dtype(DType::U8)?;
    let hwc = video.permute((0, 2, 3, 1))?.contiguous()?;
    (0..f)
        .map(|i| Ok(Rgb8::new(w, h, hwc.get(i)?.flatten_all()?.to_vec1::<u8>()?)))
        .collect()
}

/// Runs every stage. `on_progress` hears about each stage, each denoising step and each
/// decoded chunk.
pub fn generate(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    device: &Device,
    mut on_progress: impl FnMut(Progress),
) -> Result<Generation> {
    req.validate()?;
    models.check_compatible()?;
    let mut clock = StageClock {
        on_progress: &mut on_progress,
        timings: Vec::new(),
    };
    let text = clock.run(Stage::EncodeText, |_| encode_text(models, req, device))?;
    let (image_embeddings, image_latents) =
        clock.run(Stage::EncodeImage, |_| encode_image(models, req, device))?;

    let mut scheduler = DdimScheduler::new(models.scheduler.clone())?;
    scheduler.set_timesteps(req.steps)?;
    let noise = match &req.latents {
        Some(l) => l.to_device(device)?.to_dtype(DType::F32)?,
        None => {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(req.seed);
            gaussian_noise(&mut rng, req.latent_shape(), device)?
        }
    };
    let noise = (noise * scheduler.init_noise_sigma())?;
    let cond = Conditioning {
        encoder_hidden_states: text,
        image_embeddings,
        image_latents,
    };
    let latents = clock.run(Stage::Denoise, |p| {
        denoise(
            &models.unet,
            &scheduler,
            noise,
            &cond,
            req.guidance,
            req.fps as f32,
            req.plan,
            |s| p(Progress::Step(s)),
        )
    })?;
    drop(cond);

    let frames = clock.run(Stage::Decode, |p| {
        let z = (latents.to_dtype(models.vae.dtype())? / models.vae.config.scaling_factor)?;
        let (_, c, f, h, w) = z.dims5()?;
        let z = z.permute((0, 2, 1, 3, 4))?.reshape((f, c, h, w))?;
        let mut decoded = Vec::new();
        let mut done = 0;
        while done < f {
            let n = req.decode_chunk.min(f - done);
            decoded.push(models.vae.decode(&z.narrow(0, done, n)?)?);
            done += n;
            p(Progress::Decoded {
                frames: done,
                total: f,
            });
        }
        to_frames(&Tensor::cat(&decoded, 0)?)
    })?;
    Ok(Generation {
        frames,
        latents: latents.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
        timings: clock.timings,
    })
}
