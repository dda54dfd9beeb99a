//! The built-in `tiny` model: the real I2VGen-XL architecture at toy width with random weights
//! made deterministically on the fly, so everything runs on a fresh machine without a download.

use super::{TensorSpec, random_weights, unet_spec};
use crate::config::UNetConfig;
use crate::models::clip::{
    Activation, ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModelWithProjection,
};
use crate::models::tokenizer::{ClipTokenizer, byte_alphabet};
use crate::models::unet::I2VGenXLUNet;
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::pipeline::models::I2VGenXLModels;
use crate::scheduler::DdimConfig;
use candle_core::{DType, Device};
use candle_nn::VarBuilder;

/// Width of the tiny model's text states, image embedding and UNet context.
const TINY_WIDTH: usize = 32;

/// Seed of the tiny model's weights; changing it changes every tiny-model output.
pub const TINY_SEED: u64 = 0x5EED;

/// Four blocks like the published UNet, at 1/10 of its width.
pub fn tiny_unet_config() -> UNetConfig {
    UNetConfig {
        block_out_channels: vec![32, 64, 64, 64],
        layers_per_block: 1,
        norm_num_groups: 8,
        cross_attention_dim: TINY_WIDTH,
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

fn tiny_text_config() -> ClipTextConfig {
    ClipTextConfig {
        vocab_size: BYTE_VOCAB_SIZE,
        hidden_size: TINY_WIDTH,
        intermediate_size: 64,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        hidden_act: Activation::Gelu,
        ..ClipTextConfig::default()
    }
}

fn tiny_vision_config() -> ClipVisionConfig {
    ClipVisionConfig {
        hidden_size: 32,
        intermediate_size: 64,
        projection_dim: TINY_WIDTH,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        patch_size: 14,
        hidden_act: Activation::Gelu,
        ..ClipVisionConfig::default()
    }
}

/// Four blocks (the 8x spatial factor the pipeline needs), one layer each, 16 channels.
fn tiny_vae_config() -> VaeConfig {
    let published = VaeConfig::i2vgen_xl();
    VaeConfig {
        block_out_channels: vec![16; 4],
        layers_per_block: 1,
        norm_num_groups: 8,
        ..published
    }
}

/// 256 byte tokens, the same with `</w>`, and the two specials: a complete CLIP BPE vocabulary
/// without merges, so any text tokenizes, byte by byte.
const BYTE_VOCAB_SIZE: usize = 514;

fn tiny_tokenizer() -> crate::Result<ClipTokenizer> {
    // ClipTokenizer reads files; a directory per call keeps parallel builds apart.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("vivify-tiny-tokenizer-{}-{n}", std::process::id()));
    let io = |source| crate::Error::Io {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut vocab = serde_json::Map::new();
    let chars: Vec<String> = byte_alphabet().into_iter().map(String::from).collect();
    for (i, token) in chars
        .iter()
        .cloned()
        .chain(chars.iter().map(|c| format!("{c}</w>")))
        .enumerate()
    {
        vocab.insert(token, i.into());
    }
    vocab.insert("<|startoftext|>".into(), 512.into());
    vocab.insert("<|endoftext|>".into(), 513.into());
    let files = [
        ("vocab.json", serde_json::Value::Object(vocab).to_string()),
        ("merges.txt", "#version: 0.2\n".to_string()),
        (
            "tokenizer_config.json",
            r#"{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>", "model_max_length": 77}"#.to_string(),
        ),
    ];
    for (name, text) in files {
        std::fs::write(dir.join(name), text).map_err(io)?;
    }
    let tokenizer = ClipTokenizer::from_dir(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    tokenizer
}

fn random_builder(
    spec: &[TensorSpec],
    seed: u64,
    dtype: DType,
    device: &Device,
) -> crate::Result<VarBuilder<'static>> {
    Ok(VarBuilder::from_tensors(
        random_weights(spec, seed, dtype, device)?,
        dtype,
        device,
    ))
}

/// The tiny text encoder (seed `TINY_SEED + 1`).
pub fn tiny_text_encoder(dtype: DType, device: &Device) -> crate::Result<ClipTextModel> {
    let text = tiny_text_config();
    Ok(ClipTextModel::new(
        &text,
        random_builder(
            &ClipTextModel::spec(&text, false)?,
            TINY_SEED + 1,
            dtype,
            device,
        )?,
    )?)
}

/// The tiny image encoder (seed `TINY_SEED + 2`).
pub fn tiny_image_encoder(
    dtype: DType,
    device: &Device,
) -> crate::Result<ClipVisionModelWithProjection> {
    let vision = tiny_vision_config();
    Ok(ClipVisionModelWithProjection::new(
        &vision,
        random_builder(
            &ClipVisionModelWithProjection::spec(&vision, true)?,
            TINY_SEED + 2,
            dtype,
            device,
        )?,
    )?)
}

/// The tiny VAE (seed `TINY_SEED + 3`).
pub fn tiny_vae(dtype: DType, device: &Device) -> crate::Result<AutoencoderKL> {
    let vae = tiny_vae_config();
    Ok(AutoencoderKL::new(
        &vae,
        random_builder(&AutoencoderKL::spec(&vae)?, TINY_SEED + 3, dtype, device)?,
    )?)
}

/// The tiny UNet's weights held on the CPU, in a builder that copies each tensor to `device`
/// when asked for it: the host store a streamed tiny UNet reads its blocks from.
pub fn tiny_unet_host(dtype: DType, device: &Device) -> crate::Result<VarBuilder<'static>> {
    crate::device::check_compute_dtype(dtype, device)?;
    let weights = random_weights(
        &unet_spec(&tiny_unet_config())?,
        TINY_SEED,
        dtype,
        &Device::Cpu,
    )?;
    Ok(VarBuilder::from_tensors(weights, dtype, device))
}

/// The configs of the tiny pipeline's models.
pub fn tiny_configs() -> crate::memory::ModelConfigs {
    crate::memory::ModelConfigs {
        unet: tiny_unet_config(),
        vae: tiny_vae_config(),
        text: tiny_text_config(),
        vision: tiny_vision_config(),
    }
}

/// The tiny tokenizer (a byte-level CLIP vocabulary).
pub fn tiny_clip_tokenizer() -> crate::Result<ClipTokenizer> {
    tiny_tokenizer()
}

/// Every component of the tiny pipeline. Each has its own seed, so changing one component's
/// shape leaves the others' weights as they were, and each can be rebuilt alone (staged runs).
pub fn tiny_models(dtype: DType, device: &Device) -> crate::Result<I2VGenXLModels> {
    crate::device::check_compute_dtype(dtype, device)?;
    Ok(I2VGenXLModels {
        tokenizer: tiny_tokenizer()?,
        text_encoder: tiny_text_encoder(dtype, device)?,
        image_encoder: tiny_image_encoder(dtype, device)?,
        vae: tiny_vae(dtype, device)?,
        unet: tiny_unet(dtype, device)?,
        scheduler: DdimConfig::i2vgen_xl(),
    })
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
