//! Memory planning: a predicted peak per stage for any model config, request shape and
//! execution plan (`estimate`), the fastest plan that fits a budget (`planner`), and the budget a
//! run takes when none is given (`available`).

pub mod available;
pub mod estimate;
#[cfg(test)]
mod gpu_measurements;
pub mod planner;
pub mod residency;

pub use estimate::{
    Backend, MemoryEstimate, ModelConfigs, RequestShape, StageEstimate, StageKind, Weights,
    estimate, estimate_for, estimate_stage, estimate_with_weights, model_weights, spec_bytes,
};
pub use planner::{
    PlanChoice, Suggestion, choose_plan, choose_plan_on, evaluate, parse_bytes, summary, usable,
};
