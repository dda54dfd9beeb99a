//! Deterministic random weights for a spec: tests, the built-in tiny model and benchmarks.

use super::TensorSpec;
use candle_core::{DType, Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Uniform in ±1/√fan_in for matrices and kernels (PyTorch's default init scale), norms at
/// weight 1 ± 0.1 and bias ± 0.1, so activations stay in a realistic range through deep stacks.
pub fn random_weights(
    spec: &[TensorSpec],
    seed: u64,
    dtype: DType,
    device: &Device,
) -> Result<HashMap<String, Tensor>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut out = HashMap::with_capacity(spec.len());
    for t in spec {
        let n = t.numel();
        let is_norm = t.name.contains("norm");
        let bound = if t.shape.len() >= 2 {
            1.0 / (t.shape[1..].iter().product::<usize>() as f32).sqrt()
        } else {
            0.1
        };
        let center = if is_norm && t.name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        let values: Vec<f32> = (0..n)
            .map(|_| center + rng.random_range(-bound..=bound))
            .collect();
        out.insert(
            t.name.clone(),
            Tensor::from_vec(values, t.shape.as_slice(), device)?.to_dtype(dtype)?,
        );
    }
    Ok(out)
}
