//! The execution plan: how to run a request, chosen for speed within a memory budget. Every
//! choice here changes temporaries, not results (beyond float rounding).

use crate::nn::compute::ComputeOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecutionPlan {
    /// Chunked attention and feed-forward inside the UNet.
    pub compute: ComputeOptions,
    /// Classifier-free guidance as two batch-1 UNet passes instead of one batch of two: half
    /// the UNet's activations, a little slower.
    pub sequential_guidance: bool,
    /// Decode frames in overlapping spatial tiles (None: whole frames).
    pub vae_tiling: Option<VaeTiling>,
}

/// Spatial tiling of the VAE decoder, in latent pixels: tiles of `tile` x `tile` latents whose
/// neighbours overlap by `overlap` and are blended linearly across the overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VaeTiling {
    pub tile: usize,
    pub overlap: usize,
}
