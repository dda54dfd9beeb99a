//! The built-in `tiny` model: the real I2VGen-XL architecture at toy width with random weights
//! made deterministically on the fly, so everything runs on a fresh machine without a download.

use super::{random_weights, unet_spec};
use crate::config::UNetConfig;
use crate::models::unet::I2VGenXLUNet;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Seed of the tiny model's weights; changing it changes every tiny-model output.
pub const TINY_SEED: u64 = 0x5EED;

/// Four blocks like the published UNet, at 1/10 of its width.
pub fn tiny_unet_config() -> UNetConfig {
    UNetConfig {
        block_out_channels: vec![32, 64, 64, 64],
        layers_per_block: 1,
        norm_num_groups: 8,
        cross_attention_dim: 32,
        attention_head_dim: 8,
        ..UNetConfig::default()
    }
}

pub fn tiny_unet(dtype: DType, device: &Device) -> crate::Result<I2VGenXLUNet> {
    random_unet(&tiny_unet_config(), TINY_SEED, dtype, device)
}

/// A UNet of any config with deterministic random weights (the tiny model, benchmarks).
pub fn random_unet(
    config: &UNetConfig,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> crate::Result<I2VGenXLUNet> {
    crate::device::check_compute_dtype(dtype, device)?;
    let weights = random_weights(&unet_spec(config)?, seed, dtype, device)?;
    Ok(I2VGenXLUNet::new(
        config,
        VarBuilder::from_tensors(weights, dtype, device),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_model_is_deterministic() {
        let a = tiny_unet(DType::F32, &Device::Cpu).unwrap();
        let b = tiny_unet(DType::F32, &Device::Cpu).unwrap();
        let wa = a
            .conv_in
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let wb = b
            .conv_in
            .weight()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(wa, wb);
        assert!(wa.iter().any(|&v| v != 0.0));
    }
}
