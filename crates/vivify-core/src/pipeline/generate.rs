//! Image + prompt -> frames: diffusers' `I2VGenXLPipeline.__call__`, stage by stage.

use super::components::{Components, LoadedUnet};
use super::denoise::{Conditioning, Denoiser, StepProgress, uses_guidance};
use super::models::I2VGenXLModels;
use super::pillow_resize::Rgb8;
use super::preprocess::{clip_pixel_values, vae_pixel_values};
use super::recovery::{
    CHECKPOINT_VERSION, Checkpoint, CheckpointMeta, FaultInjector, FaultPoint, StagePlan, StepDown,
    step_down,
};
use super::request::GenerationRequest;
use crate::models::clip::{ClipTextModel, ClipVisionModelWithProjection};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vae::AutoencoderKL;
use crate::nn::compute::ComputeOptions;
use crate::scheduler::{DdimScheduler, gaussian_noise};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Everything a run reports: progress, and each step down the memory ladder.
#[derive(Debug, Clone)]
pub enum Event {
    Progress(Progress),
    /// A stage ran out of memory and is retried with a lower-memory setting; denoising resumes
    /// from its last finished step, decoding from its last finished chunk.
    StepDown(StepDown),
}

/// What a generation produces.
#[derive(Debug, Clone)]
pub struct Generation {
    pub frames: Vec<Rgb8>,
    /// Final latents before decoding, (1, 4, F, h, w) f32 on the CPU.
    pub latents: Tensor,
    pub timings: Vec<(Stage, Duration)>,
    /// The step-downs taken after allocation failures, in order.
    pub step_downs: Vec<StepDown>,
    /// The settings each stage that ran finished with.
    pub stage_plans: Vec<(Stage, StagePlan)>,
}

impl Generation {
    /// The plan the run ended with: the denoising plan, with the decoder's chunk.
    pub fn final_plan(&self) -> StagePlan {
        let of = |stage: Stage| {
            self.stage_plans
                .iter()
                .find(|(s, _)| *s == stage)
                .map(|(_, p)| *p)
        };
        let decode = of(Stage::Decode);
        let mut plan = of(Stage::Denoise).or(decode).unwrap_or(StagePlan {
            plan: Default::default(),
            decode_chunk: 1,
        });
        if let Some(d) = decode {
            plan.decode_chunk = d.decode_chunk;
        }
        plan
    }
}

/// See [`GenerateOptions::after_step`].
pub type AfterStep<'a> = dyn Fn(&Checkpoint) -> Result<()> + 'a;

/// How to run beyond the request: where to save a resumable checkpoint when memory runs out
/// for good, and (tests only) a fault injector.
#[derive(Default, Clone)]
pub struct GenerateOptions<'a> {
    pub injector: Option<&'a dyn FaultInjector>,
    /// Directory for the checkpoint written when no rung fixes an allocation failure (none is
    /// written without it).
    pub checkpoint_dir: Option<PathBuf>,
    /// Called after each finished denoising step with the run as it stands (the latents and a
    /// [`CheckpointMeta`] at that step), so a caller can save it and [`resume`] after a crash.
    /// An error it returns stops the run between steps (cancellation, shutdown).
    pub after_step: Option<&'a AfterStep<'a>>,
}

const STAGES: [Stage; 4] = [
    Stage::EncodeText,
    Stage::EncodeImage,
    Stage::Denoise,
    Stage::Decode,
];

fn stage_index(stage: Stage) -> usize {
    STAGES.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Stage timing, progress and the retry loop with its per-stage plans.
struct Runner<'a, F: FnMut(Event)> {
    on_event: &'a mut F,
    injector: Option<&'a dyn FaultInjector>,
    plans: [StagePlan; 4],
    /// Whether rungs that change where the weights live are open: only to a run that can
    /// reload its models from a store.
    residency_rungs: bool,
    step_downs: Vec<StepDown>,
    timings: Vec<(Stage, Duration)>,
}

impl<F: FnMut(Event)> Runner<'_, F> {
    fn emit(&mut self, p: Progress) {
        (self.on_event)(Event::Progress(p));
    }

    fn stage<T>(&mut self, stage: Stage, work: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.emit(Progress::StageStarted(stage));
        let start = Instant::now();
        let out = work(self)?;
        let took = start.elapsed();
        self.timings.push((stage, took));
        self.emit(Progress::StageFinished(stage, took));
        Ok(out)
    }

    /// Runs `work` at `point` with its stage's plan. On an allocation failure (whose temporaries
    /// are released when `work` returns) the stage steps down one rung and `work` runs again,
    /// until it succeeds or the ladder ends: then `Error::OutOfMemory`.
    fn attempt<T>(
        &mut self,
        point: FaultPoint,
        mut work: impl FnMut(&StagePlan) -> Result<T>,
    ) -> Result<T> {
        let stage = point.stage();
        let slot = stage_index(stage);
        loop {
            let plan = self.plans[slot];
            let injected = match self.injector {
                Some(injector) => injector.check(point, &plan).map_err(Error::from),
                None => Ok(()),
            };
            let err = match injected.and_then(|()| work(&plan)) {
                Ok(v) => return Ok(v),
                Err(e) if e.is_out_of_memory() => e,
                Err(e) => return Err(e),
            };
            let reason = err
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let Some((next, change)) = step_down(&plan, stage, self.residency_rungs) else {
                let tried: Vec<String> = self
                    .step_downs
                    .iter()
                    .filter(|s| s.stage == stage)
                    .map(|s| s.to.clone())
                    .collect();
                let tried = if tried.is_empty() {
                    "no lower-memory setting is left for this stage".to_string()
                } else {
                    format!(
                        "every lower-memory setting was tried ({})",
                        tried.join(", ")
                    )
                };
                return Err(Error::OutOfMemory {
                    stage: stage.name().to_string(),
                    detail: format!("{reason}; {tried}"),
                });
            };
            let (what, values) = change.split_once(": ").unwrap_or(("setting", &change));
            let (from, to) = values.split_once(" -> ").unwrap_or((values, values));
            let step = StepDown {
                stage,
                from: format!("{what} {from}"),
                to: format!("{what} {to}"),
                reason,
            };
            (self.on_event)(Event::StepDown(step.clone()));
            self.step_downs.push(step);
            self.plans[slot] = next;
        }
    }
}

/// Encodes [negative, positive] prompts (positive only without guidance): (rows, 77, hidden).
fn encode_text(
    tokenizer: &ClipTokenizer,
    text_encoder: &ClipTextModel,
    req: &GenerationRequest,
    device: &Device,
    one_row_at_a_time: bool,
) -> Result<Tensor> {
    let mut prompts = Vec::new();
    if uses_guidance(req.guidance) {
        prompts.push(req.negative_prompt.as_str());
    }
    prompts.push(req.prompt.as_str());
    let mut ids = Vec::new();
    for p in &prompts {
        ids.extend(tokenizer.encode(p)?);
    }
    let ids = Tensor::from_vec(ids, (prompts.len(), tokenizer.max_length()), device)?;
    if one_row_at_a_time {
        let rows = (0..prompts.len())
            .map(|i| text_encoder.forward(&ids.narrow(0, i, 1)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Ok(Tensor::cat(&rows, 0)?);
    }
    Ok(text_encoder.forward(&ids)?)
}

/// The CLIP image embedding (zeros in the negative row) and the image latents: frame 0 the
/// VAE's posterior mean of the image (scaled), frame k the constant k/(F-1).
fn encode_image(
    image_encoder: &ClipVisionModelWithProjection,
    vae: &AutoencoderKL,
    req: &GenerationRequest,
    device: &Device,
    opts: ComputeOptions,
) -> Result<(Tensor, Tensor)> {
    let guided = uses_guidance(req.guidance);
    let clip_input =
        clip_pixel_values(&req.image, req.width, device)?.to_dtype(image_encoder.dtype())?;
    let embedding = image_encoder.forward(&clip_input)?;
    let embeddings = if guided {
        Tensor::cat(&[&embedding.zeros_like()?, &embedding], 0)?
    } else {
        embedding
    };

    let vae_input =
        vae_pixel_values(&req.image, req.width, req.height, device)?.to_dtype(vae.dtype())?;
    let latent = (vae.encode_mean_with(&vae_input, opts)? * vae.config.scaling_factor)?;
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
/// decoded chunk. Allocation failures are recovered from as in [`generate_with`] (step-downs are
/// not reported here; they are in the result).
pub fn generate(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    device: &Device,
    mut on_progress: impl FnMut(Progress),
) -> Result<Generation> {
    generate_with(models, req, device, &GenerateOptions::default(), |e| {
        if let Event::Progress(p) = e {
            on_progress(p)
        }
    })
}

/// Runs every stage, each under a retry loop: an allocation failure steps that stage's plan down
/// one rung ([`step_down`]) and retries, denoising from its last finished step and decoding from
/// its last finished chunk. When no rung helps, the result is `Error::OutOfMemory`, and with
/// `options.checkpoint_dir` the latents are saved there for [`resume`].
pub fn generate_with(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    device: &Device,
    options: &GenerateOptions,
    on_event: impl FnMut(Event),
) -> Result<Generation> {
    run(
        Components::Resident(models),
        req,
        device,
        options,
        None,
        on_event,
    )
}

/// [`generate_with`] taking the models from `components`: from a store, each stage loads the
/// models it runs and frees them after, as `req.plan.residency` says (staged, or the UNet's
/// blocks streamed), and an all-resident run (loaded from the store or lent warm) can step down
/// to those; the frames are those of an all-resident run.
pub fn generate_from(
    components: Components,
    req: &GenerationRequest,
    device: &Device,
    options: &GenerateOptions,
    on_event: impl FnMut(Event),
) -> Result<Generation> {
    run(components, req, device, options, None, on_event)
}

/// Finishes a run from a checkpoint that `generate_with` saved when it ran out of memory. The
/// request must be the one of the checkpoint (`CheckpointMeta::request` rebuilds it around the
/// image) and gives the plan to go on with; the frames are those of an uninterrupted run.
pub fn resume(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    checkpoint: &Path,
    device: &Device,
    options: &GenerateOptions,
    on_event: impl FnMut(Event),
) -> Result<Generation> {
    resume_from(
        Components::Resident(models),
        req,
        checkpoint,
        device,
        options,
        on_event,
    )
}

/// [`resume`] taking the models from `components` (see [`generate_from`]).
pub fn resume_from(
    components: Components,
    req: &GenerationRequest,
    checkpoint: &Path,
    device: &Device,
    options: &GenerateOptions,
    on_event: impl FnMut(Event),
) -> Result<Generation> {
    let saved = Checkpoint::load(checkpoint)?;
    let mismatches = saved.meta.mismatches(req);
    if !mismatches.is_empty() {
        return Err(Error::InvalidArgument {
            field: "resume",
            message: format!(
                "{} was saved for another request: {}",
                checkpoint.display(),
                mismatches.join("; ")
            ),
        });
    }
    run(components, req, device, options, Some(saved), on_event)
}

fn run(
    components: Components,
    req: &GenerationRequest,
    device: &Device,
    options: &GenerateOptions,
    saved: Option<Checkpoint>,
    mut on_event: impl FnMut(Event),
) -> Result<Generation> {
    req.validate()?;
    components.check_compatible()?;
    // An all-resident plan holds every model from the start, wherever they come from.
    let mut own = None;
    let mut models = components.open(req.plan.residency, &mut own)?;
    let mut scheduler = DdimScheduler::new(models.scheduler()?)?;
    scheduler.set_timesteps(req.steps)?;
    let total = scheduler.timesteps().len();
    let (start, initial) = match saved {
        Some(saved) => {
            let shape = req.latent_shape();
            let (b, c, f, h, w) = shape;
            if saved.latents.dims() != [b, c, f, h, w]
                || saved.meta.step > total
                || saved.meta.timesteps != scheduler.timesteps()
            {
                return Err(Error::InvalidArgument {
                    field: "resume",
                    message: format!(
                        "checkpoint latents {:?} at step {} of {:?} do not fit the request \
                         (latents {shape:?}, timesteps {:?})",
                        saved.latents.dims(),
                        saved.meta.step,
                        saved.meta.timesteps,
                        scheduler.timesteps()
                    ),
                });
            }
            (saved.meta.step, saved.latents.to_device(device)?)
        }
        None => {
            let noise = match &req.latents {
                Some(l) => l.to_device(device)?.to_dtype(DType::F32)?,
                None => {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(req.seed);
                    gaussian_noise(&mut rng, req.latent_shape(), device)?
                }
            };
            (0, (noise * scheduler.init_noise_sigma())?)
        }
    };
    let mut runner = Runner {
        on_event: &mut on_event,
        injector: options.injector,
        plans: [StagePlan::of(req); 4],
        residency_rungs: models.can_change_residency(),
        step_downs: Vec::new(),
        timings: Vec::new(),
    };
    let meta_at = |step: usize, failed_stage: Stage, plans: &[StagePlan; 4]| CheckpointMeta {
        version: CHECKPOINT_VERSION,
        step,
        failed_stage,
        prompt: req.prompt.clone(),
        negative_prompt: req.negative_prompt.clone(),
        width: req.width,
        height: req.height,
        frames: req.frames,
        steps: req.steps,
        guidance: req.guidance,
        fps: req.fps,
        seed: req.seed,
        decode_chunk: plans[stage_index(Stage::Decode)].decode_chunk,
        plan: plans[stage_index(Stage::Denoise)].plan,
        timesteps: scheduler.timesteps().to_vec(),
    };
    // An allocation failure no rung fixed: save the latents as they stand and say where.
    let give_up = |err: Error, latents: &Tensor, step: usize, plans: &[StagePlan; 4]| -> Error {
        let (Error::OutOfMemory { stage, detail }, Some(dir)) = (&err, &options.checkpoint_dir)
        else {
            return err;
        };
        let failed_stage = STAGES
            .into_iter()
            .find(|s| s.name() == stage)
            .unwrap_or(Stage::Denoise);
        let meta = meta_at(step, failed_stage, plans);
        let path = Checkpoint::path_in(dir, &meta);
        let saved = std::fs::create_dir_all(dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })
            .and_then(|()| {
                Checkpoint {
                    latents: latents.clone(),
                    meta,
                }
                .save(&path)
            });
        let note = match saved {
            Ok(()) => format!(
                "; the latents after {step} of {total} denoising steps are saved in {p} \
                 (resume with `vivify generate --resume {p}` and the same image)",
                p = path.display()
            ),
            Err(e) => format!("; saving a checkpoint failed too: {e}"),
        };
        Error::OutOfMemory {
            stage: stage.clone(),
            detail: format!("{detail}{note}"),
        }
    };

    let latents = if start < total {
        // Each stage takes the models it runs; from a store they are loaded here and freed
        // when the stage's closure returns.
        let text = runner
            .stage(Stage::EncodeText, |r| {
                let tokenizer = models.tokenizer()?;
                let text_encoder = models.text_encoder()?;
                r.attempt(FaultPoint::Encode(Stage::EncodeText), |plan| {
                    encode_text(
                        &tokenizer,
                        &text_encoder,
                        req,
                        device,
                        plan.plan.sequential_guidance,
                    )
                })
            })
            .map_err(|e| give_up(e, &initial, start, &runner.plans))?;
        let (image_embeddings, image_latents) = runner
            .stage(Stage::EncodeImage, |r| {
                let image_encoder = models.image_encoder()?;
                let vae = models.vae()?;
                r.attempt(FaultPoint::Encode(Stage::EncodeImage), |plan| {
                    encode_image(&image_encoder, &vae, req, device, plan.plan.compute)
                })
            })
            .map_err(|e| give_up(e, &initial, start, &runner.plans))?;
        let cond = Conditioning {
            encoder_hidden_states: text,
            image_embeddings,
            image_latents,
        };
        // The latents and the count of finished steps, kept after every step.
        let mut latents = initial;
        let mut done = start;
        let denoised = runner.stage(Stage::Denoise, |r| {
            // The UNet as the stage's plan has it: a step down to staged weights frees the
            // other models, one to streamed weights reloads it.
            let mut loaded: LoadedUnet = None;
            let started = Instant::now();
            while done < total {
                latents = r.attempt(FaultPoint::DenoiseStep(done), |plan| {
                    let unet = models.unet(plan.plan.residency, &mut loaded)?;
                    Denoiser::new(unet, &scheduler, &cond, req.guidance, req.fps as f32)?
                        .step(&latents, done, &plan.plan)
                })?;
                done += 1;
                r.emit(Progress::Step(StepProgress {
                    step: done,
                    total,
                    timestep: scheduler.timesteps()[done - 1],
                    elapsed: started.elapsed(),
                }));
                if let Some(after_step) = options.after_step {
                    after_step(&Checkpoint {
                        latents: latents.clone(),
                        meta: meta_at(done, Stage::Denoise, &r.plans),
                    })?;
                }
            }
            Ok(())
        });
        if let Err(e) = denoised {
            return Err(give_up(e, &latents, done, &runner.plans));
        }
        latents
    } else {
        initial
    };

    // Decoding starts where denoising left the weights: under a staged plan (from the start or
    // after a step-down) the UNet is gone and the decoder holds the VAE alone.
    let denoise_residency = runner.plans[stage_index(Stage::Denoise)].plan.residency;
    runner.plans[stage_index(Stage::Decode)].plan.residency = denoise_residency;
    let decoded = runner.stage(Stage::Decode, |r| {
        // The decoder as the stage's plan has it: a step down to staged weights frees the
        // resident UNet and encoders and keeps their VAE.
        let mut loaded = None;
        let (_, c, f, h, w) = latents.dims5()?;
        let z = latents.permute((0, 2, 1, 3, 4))?.reshape((f, c, h, w))?;
        // Decoded chunks are kept: after a step-down, decoding goes on from the first frame
        // not yet decoded.
        let mut decoded = Vec::new();
        let mut done = 0;
        while done < f {
            let part = r.attempt(FaultPoint::DecodeChunk(decoded.len()), |plan| {
                let vae = models.decoder(plan.plan.residency, &mut loaded)?;
                let n = plan.decode_chunk.max(1).min(f - done);
                let z = (z.narrow(0, done, n)?.to_dtype(vae.dtype())? / vae.config.scaling_factor)?;
                Ok(vae.decode_with(&z, plan.plan.compute)?)
            })?;
            done += part.dim(0)?;
            decoded.push(part);
            r.emit(Progress::Decoded {
                frames: done,
                total: f,
            });
        }
        to_frames(&Tensor::cat(&decoded, 0)?)
    });
    let frames = decoded.map_err(|e| give_up(e, &latents, total, &runner.plans))?;
    let stage_plans = runner
        .timings
        .iter()
        .map(|(s, _)| (*s, runner.plans[stage_index(*s)]))
        .collect();
    Ok(Generation {
        frames,
        latents: latents.to_dtype(DType::F32)?.to_device(&Device::Cpu)?,
        timings: runner.timings,
        step_downs: runner.step_downs,
        stage_plans,
    })
}
