//! Memory planning: a predicted peak per stage for any model config, request shape and
//! execution plan (`estimate`), and the fastest plan that fits a budget (`planner`).

pub mod estimate;
pub mod planner;

pub use estimate::{
    Backend, MemoryEstimate, ModelConfigs, RequestShape, StageEstimate, Weights, estimate,
    estimate_for, estimate_with_weights, model_weights, spec_bytes,
};
pub use planner::{PlanChoice, Suggestion, choose_plan, parse_bytes, usable};
