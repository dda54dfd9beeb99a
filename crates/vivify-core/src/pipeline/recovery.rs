//! Recovery from out-of-memory: for each stage, an ordered ladder of rungs that each lower the
//! memory that stage needs, a fault injector for tests, and the resumable checkpoint written
//! when no rung helps.
//!
//! Every rung changes temporaries, never results (beyond float rounding), so a run that stepped
//! down gives the frames of a run that did not.

use super::generate::Stage;
use super::plan::{ExecutionPlan, Residency};
use super::request::GenerationRequest;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use std::cell::Cell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The settings a stage runs with: the execution plan and the decoder's frames per call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagePlan {
    pub plan: ExecutionPlan,
    pub decode_chunk: usize,
}

impl StagePlan {
    pub fn of(request: &GenerationRequest) -> Self {
        Self {
            plan: request.plan,
            decode_chunk: request.decode_chunk,
        }
    }
}

/// One step down the ladder, as reported in progress events and the metadata sidecar.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StepDown {
    pub stage: Stage,
    /// The setting before and after, e.g. "attention query chunk all" -> "... 4096".
    pub from: String,
    pub to: String,
    /// The allocation failure that caused it.
    pub reason: String,
}

/// Chunk sizes of a chunked setting, largest first: each rung takes the next one below the
/// current value (None, all at once, is above every size).
const QUERY_CHUNKS: [usize; 2] = [4096, 1024];
const HEAD_CHUNKS: [usize; 2] = [8, 1];
const FEED_FORWARD_CHUNKS: [usize; 2] = [4096, 1024];
const FRAME_CHUNKS: [usize; 2] = [4, 1];
const VAE_ROW_BANDS: [usize; 2] = [128, 32];
const PIXEL_CHUNKS: [usize; 2] = [4096, 1024];

fn show(v: Option<usize>) -> String {
    v.map_or("all".into(), |n| n.to_string())
}

/// The next size below `current` among `sizes`, if any.
fn smaller(current: Option<usize>, sizes: &[usize]) -> Option<usize> {
    sizes
        .iter()
        .copied()
        .find(|&s| current.is_none_or(|c| s < c))
}

/// The next rung of `stage`'s ladder below `current`, with a description of the change
/// ("what: from -> to"), or None at the bottom.
///
/// - encode text / encode image: one rung, sequential rows (the text encoder runs the negative
///   and positive prompts one at a time; the image stage, a single row, is retried once after
///   its temporaries are released).
/// - denoise: sequential guidance, attention query chunks 4096 then 1024, attention batch·head
///   slices 8 then 1, feed-forward chunks 4096 then 1024, spatial frame chunks 4 then 1,
///   temporal pixel chunks 4096 then 1024, convolution frame chunks 4 then 1; then staged
///   weights (from all resident) and the UNet streamed with 2, then 1 blocks on the device.
/// - decode: first, for an all-resident run, staged weights (the UNet and the encoders are freed,
///   which costs the decoding nothing); then frames per decode call halved down to 1, then the
///   decoder's full-size layers in row bands of 128, then 32 rows.
///
/// The rungs that change where the weights live are on a ladder only when `reloadable`: the run
/// can reload its models from a store (models a caller lends by reference cannot be freed).
pub fn step_down(
    current: &StagePlan,
    stage: Stage,
    reloadable: bool,
) -> Option<(StagePlan, String)> {
    let mut next = *current;
    match stage {
        Stage::EncodeText | Stage::EncodeImage => {
            if current.plan.sequential_guidance {
                return None;
            }
            next.plan.sequential_guidance = true;
            Some((next, "sequential rows: off -> on".into()))
        }
        Stage::Denoise => {
            let p = &mut next.plan;
            if !p.sequential_guidance {
                p.sequential_guidance = true;
                return Some((next, "sequential guidance: off -> on".into()));
            }
            type Knob = (
                &'static str,
                fn(&mut ExecutionPlan) -> &mut Option<usize>,
                &'static [usize],
            );
            let knobs: [Knob; 6] = [
                (
                    "attention query chunk",
                    |p| &mut p.compute.attention_query_chunk,
                    &QUERY_CHUNKS,
                ),
                (
                    "attention head slice",
                    |p| &mut p.compute.attention_head_chunk,
                    &HEAD_CHUNKS,
                ),
                (
                    "feed-forward chunk",
                    |p| &mut p.compute.feed_forward_chunk,
                    &FEED_FORWARD_CHUNKS,
                ),
                (
                    "spatial frame chunk",
                    |p| &mut p.compute.spatial_frame_chunk,
                    &FRAME_CHUNKS,
                ),
                (
                    "temporal pixel chunk",
                    |p| &mut p.compute.temporal_pixel_chunk,
                    &PIXEL_CHUNKS,
                ),
                (
                    "convolution frame chunk",
                    |p| &mut p.compute.conv_frame_chunk,
                    &FRAME_CHUNKS,
                ),
            ];
            for (name, knob, sizes) in knobs {
                let value = knob(p);
                if let Some(s) = smaller(*value, sizes) {
                    let change = format!("{name}: {} -> {s}", show(*value));
                    *value = Some(s);
                    return Some((next, change));
                }
            }
            // Last, where the weights live: an all-resident run frees the encoders and the VAE
            // while denoising (staged), then the UNet's blocks are streamed from host memory, two
            // on the device, then one.
            if !reloadable {
                return None;
            }
            let (what, lower) = match p.residency {
                Residency::AllResident => ("model weights", Residency::Staged),
                Residency::Staged => (
                    "UNet weights",
                    Residency::StreamedUnet { resident_blocks: 2 },
                ),
                Residency::StreamedUnet { resident_blocks } if resident_blocks > 1 => (
                    "UNet weights",
                    Residency::StreamedUnet {
                        resident_blocks: (resident_blocks - 1).min(2),
                    },
                ),
                _ => return None,
            };
            let change = format!(
                "{what}: {} -> {}",
                residency_name(p.residency),
                residency_name(lower)
            );
            p.residency = lower;
            Some((next, change))
        }
        Stage::Decode => {
            if reloadable && current.plan.residency == Residency::AllResident {
                next.plan.residency = Residency::Staged;
                return Some((next, "model weights: all resident -> staged".into()));
            }
            if current.decode_chunk <= 1 {
                // then the decoder's full-size layers in row bands
                let band = &mut next.plan.compute.vae_row_band;
                let s = smaller(*band, &VAE_ROW_BANDS)?;
                let change = format!("VAE row band: {} -> {s}", show(*band));
                *band = Some(s);
                return Some((next, change));
            }
            next.decode_chunk = current.decode_chunk / 2;
            Some((
                next,
                format!(
                    "frames per decode call: {} -> {}",
                    current.decode_chunk, next.decode_chunk
                ),
            ))
        }
    }
}

/// How a step-down names a residency: `staged`, `streamed:N`.
fn residency_name(r: Residency) -> String {
    match r {
        Residency::AllResident => "all resident".into(),
        Residency::Staged => "staged".into(),
        Residency::StreamedUnet { resident_blocks } => format!("streamed:{resident_blocks}"),
    }
}

/// A place in the pipeline where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// The start of an encode stage.
    Encode(Stage),
    /// Before denoising step `n` (0-based).
    DenoiseStep(usize),
    /// Before decode chunk `n` (0-based, in calls made since the stage's current plan began).
    DecodeChunk(usize),
}

impl FaultPoint {
    pub fn stage(self) -> Stage {
        match self {
            FaultPoint::Encode(stage) => stage,
            FaultPoint::DenoiseStep(_) => Stage::Denoise,
            FaultPoint::DecodeChunk(_) => Stage::Decode,
        }
    }
}

/// Makes chosen points of a run fail as if an allocation had failed (tests only; production
/// passes None).
pub trait FaultInjector {
    /// Called before the work at `point` runs with `plan`; an error fails that work.
    fn check(&self, point: FaultPoint, plan: &StagePlan) -> candle_core::Result<()>;
}

/// The error an injected fault raises; classified as out-of-memory like CUDA's.
pub fn injected_oom(point: FaultPoint) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "injected fault at {point:?}: CUDA_ERROR_OUT_OF_MEMORY, out of memory"
    ))
}

/// Fails at `point` the first `times` times it is reached (usize::MAX: always).
#[derive(Debug)]
pub struct FailAt {
    pub point: FaultPoint,
    remaining: Cell<usize>,
}

impl FailAt {
    pub fn new(point: FaultPoint, times: usize) -> Self {
        Self {
            point,
            remaining: Cell::new(times),
        }
    }

    /// Failures still to come.
    pub fn remaining(&self) -> usize {
        self.remaining.get()
    }
}

impl FaultInjector for FailAt {
    fn check(&self, point: FaultPoint, _: &StagePlan) -> candle_core::Result<()> {
        if point == self.point && self.remaining.get() > 0 {
            self.remaining.set(self.remaining.get() - 1);
            return Err(injected_oom(point));
        }
        Ok(())
    }
}

/// A CPU stand-in for a memory budget: `stage` runs out of memory unless its plan is at least
/// as low as `needed` on the ladder (reached after that many step-downs from the default plan)
/// of a run that can (`reloadable`) or cannot reload its models.
#[derive(Debug, Clone, Copy)]
pub struct BudgetGuard {
    pub stage: Stage,
    pub needed: StagePlan,
    pub reloadable: bool,
}

impl BudgetGuard {
    /// The guard that lets `stage` through only after `rungs` step-downs from `start`.
    pub fn after_rungs(stage: Stage, start: StagePlan, rungs: usize, reloadable: bool) -> Self {
        let mut needed = start;
        for _ in 0..rungs {
            if let Some((next, _)) = step_down(&needed, stage, reloadable) {
                needed = next;
            }
        }
        Self {
            stage,
            needed,
            reloadable,
        }
    }
}

impl FaultInjector for BudgetGuard {
    fn check(&self, point: FaultPoint, plan: &StagePlan) -> candle_core::Result<()> {
        if point.stage() != self.stage {
            return Ok(());
        }
        // A plan is low enough when stepping it down never passes through `needed` again,
        // i.e. it equals `needed` or lies further down the ladder.
        let mut p = self.needed;
        loop {
            if p == *plan {
                return Ok(());
            }
            match step_down(&p, self.stage, self.reloadable) {
                Some((next, _)) => p = next,
                None => return Err(injected_oom(point)),
            }
        }
    }
}

/// Metadata key of a checkpoint file.
const CHECKPOINT_KEY: &str = "vivify.checkpoint";
pub const CHECKPOINT_VERSION: u32 = 1;

/// What a checkpoint records besides the latents: the request's parameters (not the image,
/// which the caller passes again), how many denoising steps are finished and the plans the
/// stages had stepped down to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    pub version: u32,
    /// Finished denoising steps (0: the initial noise; `steps`: the final latents).
    pub step: usize,
    /// The stage that ran out of memory.
    pub failed_stage: Stage,
    pub prompt: String,
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub steps: usize,
    pub guidance: f64,
    pub fps: u32,
    pub seed: u64,
    pub decode_chunk: usize,
    pub plan: ExecutionPlan,
    /// The timesteps of the run, for checking.
    pub timesteps: Vec<i64>,
}

impl CheckpointMeta {
    /// The request this checkpoint continues, around the conditioning `image`.
    pub fn request(&self, image: super::pillow_resize::Rgb8) -> GenerationRequest {
        GenerationRequest {
            negative_prompt: self.negative_prompt.clone(),
            width: self.width,
            height: self.height,
            frames: self.frames,
            steps: self.steps,
            guidance: self.guidance,
            fps: self.fps,
            seed: self.seed,
            latents: None,
            decode_chunk: self.decode_chunk,
            plan: self.plan,
            ..GenerationRequest::new(image, self.prompt.clone())
        }
    }

    /// The differences between the request and this checkpoint that would change the result.
    pub fn mismatches(&self, r: &GenerationRequest) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, ours: String, theirs: String| {
            if ours != theirs {
                out.push(format!("{name}: checkpoint {ours}, request {theirs}"));
            }
        };
        check(
            "prompt",
            format!("{:?}", self.prompt),
            format!("{:?}", r.prompt),
        );
        check(
            "negative_prompt",
            format!("{:?}", self.negative_prompt),
            format!("{:?}", r.negative_prompt),
        );
        check("width", self.width.to_string(), r.width.to_string());
        check("height", self.height.to_string(), r.height.to_string());
        check("frames", self.frames.to_string(), r.frames.to_string());
        check("steps", self.steps.to_string(), r.steps.to_string());
        check(
            "guidance",
            self.guidance.to_string(),
            r.guidance.to_string(),
        );
        check("fps", self.fps.to_string(), r.fps.to_string());
        out
    }
}

/// Latents and where they stand, saved when a stage runs out of memory for good.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// (1, 4, F, h, w) f32.
    pub latents: Tensor,
    pub meta: CheckpointMeta,
}

impl Checkpoint {
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = serde_json::to_string(&self.meta).map_err(|e| Error::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let latents = self
            .latents
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .contiguous()?;
        safetensors::serialize_to_file(
            [("latents", &latents)],
            Some(HashMap::from([(CHECKPOINT_KEY.to_string(), meta)])),
            path,
        )
        .map_err(|e| Error::Weights {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bad = |message: String| Error::Weights {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CHECKPOINT_KEY))
            .ok_or_else(|| bad(format!("not a vivify checkpoint (no `{CHECKPOINT_KEY}`)")))?;
        let meta: CheckpointMeta =
            serde_json::from_str(meta).map_err(|e| bad(format!("`{CHECKPOINT_KEY}`: {e}")))?;
        if meta.version != CHECKPOINT_VERSION {
            return Err(bad(format!(
                "checkpoint version {}, this build reads {CHECKPOINT_VERSION}",
                meta.version
            )));
        }
        let latents = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?
            .remove("latents")
            .ok_or_else(|| bad("no tensor `latents`".into()))?;
        Ok(Self { latents, meta })
    }

    /// The file name a run's checkpoint gets in the checkpoint directory.
    pub fn path_in(dir: &Path, meta: &CheckpointMeta) -> PathBuf {
        dir.join(format!(
            "vivify-checkpoint-seed{}-step{}of{}.safetensors",
            meta.seed, meta.step, meta.steps
        ))
    }
}
