//! The plan `generate` runs with: the planner's fastest plan within the memory budget
//! (`--memory-budget`, else the device's free memory at start less a reserve), then the
//! `--plan KEY=VALUE` overrides on top.

use crate::plan_overrides;
use anyhow::Result;
use candle_core::{DType, Device};
use vivify_core::memory::available::{auto_budget, free_bytes};
use vivify_core::memory::{Backend, ModelConfigs, PlanChoice, RequestShape, choose_plan_on};
use vivify_core::pipeline::denoise::uses_guidance;
use vivify_core::pipeline::request::GenerationRequest;

/// Where the budget came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetSource {
    Flag,
    FreeMemory,
}

/// The planner's pick and the budget it was made for.
#[derive(Debug, Clone)]
pub struct AutoPlan {
    pub choice: PlanChoice,
    pub source: BudgetSource,
}

impl AutoPlan {
    /// What the sidecar records of the planning.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "chosen": self.choice.summary(),
            "budget_bytes": self.choice.budget_bytes,
            "budget_from": match self.source {
                BudgetSource::Flag => "--memory-budget",
                BudgetSource::FreeMemory => "free memory",
            },
            "predicted_peak_bytes": self.choice.predicted_peak_bytes(),
            "fits": self.choice.fits,
            "slowdown": self.choice.slowdown,
        })
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Sets `request.plan` (and the decode chunk unless `decode_chunk_flag` is given) to the
/// planner's choice, applies `overrides`, and prints the plan in one line. Returns None (and
/// keeps the plain plan) when no budget is given and the device's free memory is unknown.
pub fn apply(
    request: &mut GenerationRequest,
    configs: &ModelConfigs,
    budget: Option<u64>,
    decode_chunk_flag: Option<usize>,
    overrides: &[String],
    device: &Device,
    dtype: DType,
) -> Result<Option<AutoPlan>> {
    let (budget, source) = match budget {
        Some(b) => (b, BudgetSource::Flag),
        None => match free_bytes(device) {
            Some(free) => (auto_budget(free), BudgetSource::FreeMemory),
            None => {
                plan_overrides::apply(&mut request.plan, overrides)?;
                eprintln!(
                    "plan: {} (free memory of {device:?} unknown; give --memory-budget to plan)",
                    vivify_core::memory::summary(&request.plan, request.decode_chunk)
                );
                return Ok(None);
            }
        },
    };
    let shape = RequestShape {
        width: request.width,
        height: request.height,
        frames: request.frames,
        guidance: uses_guidance(request.guidance),
        decode_chunk: request.decode_chunk,
    };
    let backend = match device {
        Device::Cpu => Backend::Cpu,
        _ => Backend::Cuda,
    };
    let choice = choose_plan_on(configs, &shape, dtype, budget, backend)?;
    request.plan = choice.plan;
    request.decode_chunk = decode_chunk_flag.unwrap_or(choice.decode_chunk);
    plan_overrides::apply(&mut request.plan, overrides)?;
    let fit = if choice.fits {
        String::new()
    } else {
        "; nothing fits, so the most frugal plan".into()
    };
    let by_hand = if overrides.is_empty() && decode_chunk_flag.is_none() {
        String::new()
    } else {
        format!(" (planner chose {}; flags set the rest)", choice.summary())
    };
    eprintln!(
        "plan: {}{by_hand}, predicted peak {} of a {} budget{fit}, expected slowdown {:.2}x",
        vivify_core::memory::summary(&request.plan, request.decode_chunk),
        gib(choice.predicted_peak_bytes()),
        gib(budget),
        choice.slowdown
    );
    Ok(Some(AutoPlan { choice, source }))
}
