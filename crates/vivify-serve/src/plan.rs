//! The planner preview: what `choose_plan` predicts for a request on this server's model and
//! memory, and what it changes from the plain plan.

use crate::state::Shared;
use serde_json::{Value, json};
use vivify_core::memory::{PlanChoice, RequestShape, choose_plan};
use vivify_core::pipeline::denoise::uses_guidance;

/// The plan for a job of this size, when the model's configs and a budget are known.
pub fn plan_for(
    shared: &Shared,
    width: usize,
    height: usize,
    frames: usize,
    guidance: f64,
) -> Option<PlanChoice> {
    let configs = shared.info.model_configs.as_ref()?;
    let budget = shared.memory_budget()?;
    let shape = RequestShape {
        width,
        height,
        frames,
        guidance: uses_guidance(guidance),
        decode_chunk: 1,
    };
    choose_plan(configs, &shape, shared.info.dtype, budget).ok()
}

/// The changes a plan makes from running everything at once, in words.
pub fn changes(c: &PlanChoice, frames: usize) -> Vec<String> {
    let mut out = Vec::new();
    let p = &c.plan;
    if p.residency.is_staged() {
        out.push(p.residency.words());
    }
    if p.sequential_guidance {
        out.push("guidance rows one at a time".to_string());
    }
    for choice in p.compute.choices() {
        if let Some(n) = choice.value {
            out.push(format!("{} {n}", choice.words));
        }
    }
    if c.decode_chunk < frames {
        out.push(format!("decode {} frames per call", c.decode_chunk));
    }
    out
}

pub fn preview_json(c: &PlanChoice, frames: usize) -> Value {
    json!({
        "fits": c.fits,
        "predicted_peak_bytes": c.predicted_peak_bytes(),
        "budget_bytes": c.budget_bytes,
        "usable_bytes": vivify_core::memory::usable(c.budget_bytes),
        "slowdown": c.slowdown,
        "changes": changes(c, frames),
        "plan": c.plan,
        "decode_chunk": c.decode_chunk.min(frames),
        "suggestion": c.suggestion,
    })
}
