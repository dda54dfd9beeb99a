//! The denoising stage: DDIM over the UNet with classifier-free guidance, as diffusers'
//! `I2VGenXLPipeline` runs it.

use super::plan::ExecutionPlan;
use crate::models::unet::{UNetInputs, UNetModel};
use crate::scheduler::DdimScheduler;
use crate::{Error, Result};
use candle_core::Tensor;
use std::time::{Duration, Instant};

/// The UNet's conditioning for one video. With guidance, each tensor holds two rows in the
/// order [negative, positive]; without, one row (positive).
#[derive(Debug, Clone)]
pub struct Conditioning {
    /// Text encoder states (rows, tokens, cross_attention_dim).
    pub encoder_hidden_states: Tensor,
    /// CLIP image embeddings (rows, cross_attention_dim); zeros in the negative row.
    pub image_embeddings: Tensor,
    /// Image latents (rows, 4, F, h, w).
    pub image_latents: Tensor,
}

/// Report after each finished step.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    /// 1-based index of the step just finished.
    pub step: usize,
    pub total: usize,
    pub timestep: i64,
    pub elapsed: Duration,
}

impl StepProgress {
    /// Remaining time at the mean pace so far.
    pub fn eta(&self) -> Duration {
        self.elapsed
            .mul_f64((self.total - self.step) as f64 / self.step as f64)
    }
}

/// Classifier-free guidance is on when the scale exceeds 1, as in diffusers.
pub fn uses_guidance(guidance: f64) -> bool {
    guidance > 1.0
}

/// One video's denoising: the UNet, the scheduler (already `set_timesteps`) and the
/// conditioning, stepped one timestep at a time so that a caller can keep the latents after
/// each step and resume from any of them.
pub struct Denoiser<'a> {
    /// The UNet, resident or streamed.
    pub unet: &'a dyn UNetModel,
    pub scheduler: &'a DdimScheduler,
    pub cond: &'a Conditioning,
    pub guidance: f64,
    pub fps: f32,
}

impl<'a> Denoiser<'a> {
    /// Checks that the conditioning has the rows guidance needs.
    pub fn new(
        unet: &'a dyn UNetModel,
        scheduler: &'a DdimScheduler,
        cond: &'a Conditioning,
        guidance: f64,
        fps: f32,
    ) -> Result<Self> {
        let rows = if uses_guidance(guidance) { 2 } else { 1 };
        if cond.encoder_hidden_states.dim(0)? != rows {
            return Err(Error::InvalidArgument {
                field: "conditioning",
                message: format!(
                    "expected {rows} rows (guidance {guidance}), got {}",
                    cond.encoder_hidden_states.dim(0)?
                ),
            });
        }
        Ok(Self {
            unet,
            scheduler,
            cond,
            guidance,
            fps,
        })
    }

    pub fn timesteps(&self) -> &[i64] {
        self.scheduler.timesteps()
    }

    /// The UNet on `sample` with the conditioning rows `rows` ([negative, positive] order).
    fn predict(
        &self,
        sample: &Tensor,
        rows: std::ops::Range<usize>,
        t: i64,
        plan: &ExecutionPlan,
    ) -> Result<Tensor> {
        let take = |x: &Tensor| x.narrow(0, rows.start, rows.len());
        Ok(self.unet.forward(&UNetInputs {
            sample,
            timestep: t as f32,
            fps: self.fps,
            image_latents: &take(&self.cond.image_latents)?,
            image_embeddings: &take(&self.cond.image_embeddings)?,
            encoder_hidden_states: &take(&self.cond.encoder_hidden_states)?,
            options: plan.compute,
        })?)
    }

    /// Step `i` (0-based) of the timesteps: the latents after it.
    pub fn step(&self, latents: &Tensor, i: usize, plan: &ExecutionPlan) -> Result<Tensor> {
        let t = self.timesteps()[i];
        let prediction = if !uses_guidance(self.guidance) {
            self.predict(latents, 0..1, t, plan)?
        } else {
            let (uncond, cond) = if plan.sequential_guidance {
                (
                    self.predict(latents, 0..1, t, plan)?,
                    self.predict(latents, 1..2, t, plan)?,
                )
            } else {
                let both = self.predict(&Tensor::cat(&[latents, latents], 0)?, 0..2, t, plan)?;
                (both.narrow(0, 0, 1)?, both.narrow(0, 1, 1)?)
            };
            (&uncond + ((cond - &uncond)? * self.guidance)?)?
        };
        self.scheduler.step(
            &prediction.to_dtype(latents.dtype())?,
            t,
            latents,
            0.0,
            None,
        )
    }
}

/// Runs every timestep of `scheduler` (already `set_timesteps`) from `latents` (1, 4, F, h, w)
/// and returns the final latents.
#[allow(clippy::too_many_arguments)]
pub fn denoise(
    unet: &dyn UNetModel,
    scheduler: &DdimScheduler,
    latents: Tensor,
    cond: &Conditioning,
    guidance: f64,
    fps: f32,
    plan: ExecutionPlan,
    mut on_step: impl FnMut(StepProgress),
) -> Result<Tensor> {
    let denoiser = Denoiser::new(unet, scheduler, cond, guidance, fps)?;
    let total = denoiser.timesteps().len();
    let started = Instant::now();
    let mut latents = latents;
    for i in 0..total {
        latents = denoiser.step(&latents, i, &plan)?;
        on_step(StepProgress {
            step: i + 1,
            total,
            timestep: denoiser.timesteps()[i],
            elapsed: started.elapsed(),
        });
    }
    Ok(latents)
}
