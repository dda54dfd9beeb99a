//! The one GPU worker: a plain thread that takes the oldest queued job, runs the pipeline with
//! its progress callback, saves the latents after every step (so a crash or a shutdown resumes
//! from there) and writes the MP4 and a thumbnail.

use crate::events::{JobEvent, step_down_summary};
use crate::plan::plan_for;
use crate::state::Shared;
use crate::store::{Job, JobState};
use anyhow::{Context, Result};
use candle_core::{DType, Device};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use vivify_core::pipeline::components::Components;
use vivify_core::pipeline::generate::{
    Event, GenerateOptions, Progress, Stage, generate_from, resume_from,
};
use vivify_core::pipeline::models::I2VGenXLModels;
use vivify_core::pipeline::plan::Residency;
use vivify_core::pipeline::preprocess::load_image;
use vivify_core::pipeline::recovery::{BudgetGuard, Checkpoint, FaultInjector, StagePlan};
use vivify_core::pipeline::request::GenerationRequest;
use vivify_core::pipeline::store::ModelStore;

/// Loads the model; called once at start and again after `--unload-after` freed it.
pub type ModelLoader = Arc<dyn Fn() -> Result<I2VGenXLModels> + Send + Sync>;

pub struct WorkerConfig {
    pub loader: ModelLoader,
    /// Where a job whose plan loads models per stage (staged or streamed residency) takes
    /// them from, and where a job on the warm models goes on from when it steps down to staged
    /// weights; without one every job runs on the warm, all-resident models, whose ladder ends
    /// above staged weights.
    pub store: Option<ModelStore>,
    pub device: Device,
    pub dtype: DType,
    /// Free the model after this long without jobs.
    pub unload_after: Option<Duration>,
    /// Testing aid: a pause after each denoising step, so tests can act mid-job.
    pub step_delay: Duration,
    /// Testing aid: every job's denoising runs out of memory until its plan is this many rungs
    /// down its ladder (a simulated memory budget for CPU runs, as `vivify generate
    /// --simulate-denoise-oom`).
    pub simulate_denoise_oom: Option<usize>,
}

pub fn spawn(shared: Arc<Shared>, config: WorkerConfig) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("vivify-worker".into())
        .spawn(move || Worker::new(shared, config).run())
        .expect("spawning the worker thread")
}

struct Worker {
    shared: Arc<Shared>,
    config: WorkerConfig,
    models: Option<I2VGenXLModels>,
}

/// How a job ended when it did not finish.
enum Stop {
    Shutdown,
    Cancelled,
}

impl Worker {
    fn new(shared: Arc<Shared>, config: WorkerConfig) -> Self {
        Self {
            shared,
            config,
            models: None,
        }
    }

    fn run(mut self) {
        // Warm start: the model is loaded before the first job arrives.
        if let Err(e) = self.ensure_model() {
            error!("loading the model: {e:#}");
        }
        let mut idle_since = Instant::now();
        while !self.shared.shutting_down() {
            match self.shared.store.claim_next() {
                Ok(Some(job)) => {
                    self.shared.events.queue_moved();
                    self.run_job(job);
                    idle_since = Instant::now();
                    continue;
                }
                Ok(None) => {}
                Err(e) => error!("reading the queue: {e:#}"),
            }
            if let Some(after) = self.config.unload_after
                && self.models.is_some()
                && idle_since.elapsed() >= after
            {
                self.models = None;
                self.shared.model_loaded.store(false, Ordering::SeqCst);
                info!("model unloaded after {after:?} idle");
            }
            self.shared.wait_for_work(Duration::from_millis(500));
        }
        info!("worker stopped");
    }

    fn ensure_model(&mut self) -> Result<()> {
        if self.models.is_none() {
            let start = Instant::now();
            self.models = Some((self.config.loader)().context("loading the model")?);
            self.shared.model_loaded.store(true, Ordering::SeqCst);
            info!("model loaded in {:.1}s", start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    fn run_job(&mut self, job: Job) {
        let id = job.id.clone();
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
        info!(job = %id, "started");
        let started = Instant::now();
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.generate(&job)));
        let shared = &self.shared;
        let checkpoint = shared.dirs.checkpoint(&id);
        let finish = |state: JobState, error: Option<&str>, event: JobEvent| {
            if let Err(e) = shared.store.finish(&id, state, error) {
                error!(job = %id, "recording {}: {e:#}", state.as_str());
            }
            let _ = std::fs::remove_file(&checkpoint);
            shared.events.publish(&id, event);
        };
        match outcome {
            Ok(Ok(None)) => {
                info!(job = %id, "done in {:.1}s", started.elapsed().as_secs_f64());
                finish(JobState::Done, None, JobEvent::Done);
            }
            // Left `running` with its latents saved: the next start resumes it.
            Ok(Ok(Some(Stop::Shutdown))) => info!(job = %id, "checkpointed for shutdown"),
            Ok(Ok(Some(Stop::Cancelled))) => {
                info!(job = %id, "cancelled");
                finish(JobState::Cancelled, None, JobEvent::Cancelled);
            }
            Ok(Err(e)) => {
                let error = format!("{e:#}");
                warn!(job = %id, "failed: {error}");
                finish(
                    JobState::Failed,
                    Some(&error),
                    JobEvent::Failed {
                        error: error.clone(),
                    },
                );
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let error = format!("internal error: {what}");
                error!(job = %id, "{error}");
                finish(
                    JobState::Failed,
                    Some(&error),
                    JobEvent::Failed {
                        error: error.clone(),
                    },
                );
            }
        }
        self.shared
            .cancel
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Runs one job to its video; `Ok(Some(_))` when it was stopped between steps.
    fn generate(&mut self, job: &Job) -> Result<Option<Stop>> {
        let shared = Arc::clone(&self.shared);
        let id = job.id.as_str();
        let publish = |event: JobEvent| shared.events.publish(id, event);
        if shared.cancel_requested(id) {
            return Ok(Some(Stop::Cancelled));
        }
        let p = &job.params;
        let image = load_image(&shared.dirs.uploads.join(&job.image_file))?;
        let checkpoint_path = shared.dirs.checkpoint(id);
        // A checkpoint left by a run that was interrupted: go on from its latents.
        let saved = checkpoint_path
            .exists()
            .then(|| Checkpoint::load(&checkpoint_path))
            .transpose()
            .unwrap_or_else(|e| {
                warn!(job = %id, "unreadable checkpoint, starting over: {e}");
                None
            });
        let mut request = match &saved {
            Some(cp) => {
                publish(JobEvent::Resumed { step: cp.meta.step });
                info!(job = %id, "resuming after step {} of {}", cp.meta.step, cp.meta.steps);
                cp.meta.request(image)
            }
            None => {
                let mut request = GenerationRequest {
                    negative_prompt: p.negative_prompt.clone(),
                    width: p.width,
                    height: p.height,
                    frames: p.frames,
                    steps: p.steps,
                    guidance: p.guidance,
                    fps: p.fps,
                    seed: p.seed,
                    ..GenerationRequest::new(image, p.prompt.clone())
                };
                // The planner's choice for the memory there is; recovery still steps down if
                // the estimate was wrong.
                if let Some(choice) = plan_for(&shared, p.width, p.height, p.frames, p.guidance) {
                    request.plan = choice.plan;
                    request.decode_chunk = choice.decode_chunk.clamp(1, p.frames);
                }
                request
            }
        };
        // Warm models are all resident; a plan that loads models per stage runs from the store,
        // and the warm copy is freed first, or it would hold the memory the plan saves.
        let staged = request.plan.residency.is_staged() && self.config.store.is_some();
        if staged {
            if self.models.take().is_some() {
                self.shared.model_loaded.store(false, Ordering::SeqCst);
                info!(job = %id, "warm model freed: the plan loads models per stage");
            }
        } else {
            request.plan.residency = Residency::AllResident;
            if self.models.is_none() {
                publish(JobEvent::Stage {
                    stage: "load model".into(),
                });
            }
            self.ensure_model()?;
        }
        // With a store, the warm models are lent to the run: a step down to staged weights
        // frees them (the next all-resident job loads them again).
        let components = match (&self.config.store, &mut self.models) {
            (Some(store), _) if staged => Components::Store(store),
            (Some(store), models @ Some(_)) => Components::Warm { models, store },
            (None, Some(models)) => Components::Resident(models),
            _ => anyhow::bail!("no model"),
        };
        let step_delay = self.config.step_delay;
        let stopped = std::cell::Cell::new(None);
        let after_step = |cp: &Checkpoint| -> vivify_core::Result<()> {
            save_checkpoint(cp, &checkpoint_path)?;
            if !step_delay.is_zero() {
                std::thread::sleep(step_delay);
            }
            if shared.shutting_down() {
                stopped.set(Some(Stop::Shutdown));
            } else if shared.cancel_requested(id) {
                stopped.set(Some(Stop::Cancelled));
            } else {
                return Ok(());
            }
            Err(vivify_core::Error::Stopped(format!("job {id}")))
        };
        let reloadable = matches!(components, Components::Store(_) | Components::Warm { .. });
        let guard = self.config.simulate_denoise_oom.map(|rungs| {
            BudgetGuard::after_rungs(Stage::Denoise, StagePlan::of(&request), rungs, reloadable)
        });
        let options = GenerateOptions {
            injector: guard.as_ref().map(|g| g as &dyn FaultInjector),
            checkpoint_dir: None,
            after_step: Some(&after_step),
        };
        // The step count this process started denoising from (a resumed run starts mid-way).
        let mut base_step: Option<usize> = None;
        let on_event = |event: Event| match event {
            Event::StepDown(s) => {
                // Recorded first, so a client that hears of it finds it in the job.
                let summary = step_down_summary(s.stage.name(), &s.to);
                if let Err(e) = shared.store.record_step_down(id, &summary) {
                    warn!(job = %id, "recording the step down `{summary}`: {e:#}");
                }
                publish(JobEvent::StepDown {
                    stage: s.stage.name().into(),
                    from: s.from,
                    to: s.to,
                    reason: s.reason,
                })
            }
            Event::Progress(Progress::StageStarted(stage)) => publish(JobEvent::Stage {
                stage: stage.name().into(),
            }),
            Event::Progress(Progress::Step(s)) => {
                let base = *base_step.get_or_insert(s.step - 1);
                let per_step = s.elapsed.as_secs_f64() / (s.step - base).max(1) as f64;
                publish(JobEvent::Step {
                    step: s.step,
                    total: s.total,
                    seconds_per_step: per_step,
                    eta_seconds: per_step * (s.total - s.step) as f64,
                })
            }
            Event::Progress(Progress::Decoded { frames, total }) => {
                publish(JobEvent::Decoded { frames, total })
            }
            Event::Progress(Progress::StageFinished(..)) => {}
        };
        let device = &self.config.device;
        let result = match &saved {
            Some(_) => resume_from(
                components,
                &request,
                &checkpoint_path,
                device,
                &options,
                on_event,
            ),
            None => generate_from(components, &request, device, &options, on_event),
        };
        if self.models.is_none() && !staged {
            self.shared.model_loaded.store(false, Ordering::SeqCst);
            info!(job = %id, "warm model freed: the job stepped down to staged weights");
        }
        let generation = match result {
            Ok(g) => g,
            Err(e) => {
                return match stopped.take() {
                    Some(stop) => Ok(Some(stop)),
                    None => Err(e.into()),
                };
            }
        };
        publish(JobEvent::Stage {
            stage: "encode video".into(),
        });
        write_video(&shared.dirs, id, &generation.frames, f64::from(request.fps))?;
        Ok(None)
    }
}

/// Saved beside, then renamed over, so a crash mid-write leaves the previous step's file.
fn save_checkpoint(cp: &Checkpoint, path: &Path) -> vivify_core::Result<()> {
    let tmp = path.with_extension("tmp");
    cp.save(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|source| vivify_core::Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The MP4 and a first-frame PNG thumbnail, each written under a temporary name and renamed, so
/// the video route never serves half a file.
fn write_video(
    dirs: &crate::state::Dirs,
    id: &str,
    frames: &[vivify_core::pipeline::pillow_resize::Rgb8],
    fps: f64,
) -> Result<()> {
    let first = frames.first().context("no frames generated")?;
    let clip = vivify_video::Frames {
        width: first.width,
        height: first.height,
        frames: frames.iter().map(|f| f.data.as_slice()).collect(),
        fps,
    };
    let video = dirs.video(id);
    let tmp = dirs.outputs.join(format!("{id}.part.mp4"));
    vivify_video::mp4::write_mp4(&tmp, &clip, &vivify_video::Mp4Options::default())?;
    std::fs::rename(&tmp, &video)?;
    let thumb =
        image::RgbImage::from_raw(first.width as u32, first.height as u32, first.data.clone())
            .context("thumbnail size")?;
    let tmp = dirs.outputs.join(format!("{id}.part.png"));
    thumb.save_with_format(&tmp, image::ImageFormat::Png)?;
    std::fs::rename(&tmp, dirs.thumbnail(id))?;
    Ok(())
}
