//! The execution plan: how to run a request, chosen for speed within a memory budget. Every
//! choice here changes temporaries, not results (beyond float rounding).

use crate::nn::compute::ComputeOptions;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct ExecutionPlan {
    /// Chunked attention and feed-forward inside the UNet.
    pub compute: ComputeOptions,
    /// Classifier-free guidance as two batch-1 UNet passes instead of one batch of two: half
    /// the UNet's activations, a little slower.
    pub sequential_guidance: bool,
}
