//! The five components of an I2VGen-XL pipeline, loaded from a diffusers directory or built as
//! the tiny random model.

use super::store::ModelStore;
use crate::memory::ModelConfigs;
use crate::models::clip::{ClipTextModel, ClipVisionModelWithProjection};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::I2VGenXLUNet;
use crate::models::vae::AutoencoderKL;
use crate::scheduler::DdimConfig;
use crate::{Error, Result};
use candle_core::{DType, Device};
use std::path::Path;

pub struct I2VGenXLModels {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel,
    pub image_encoder: ClipVisionModelWithProjection,
    pub vae: AutoencoderKL,
    pub unet: I2VGenXLUNet,
    pub scheduler: DdimConfig,
}

/// Component folders of a diffusers I2VGen-XL directory and their weight-file stems.
pub const COMPONENTS: [(&str, Option<&str>); 6] = [
    ("tokenizer", None),
    ("text_encoder", Some("model")),
    ("image_encoder", Some("model")),
    ("vae", Some("diffusion_pytorch_model")),
    ("unet", Some("diffusion_pytorch_model")),
    ("scheduler", None),
];

impl I2VGenXLModels {
    /// Loads every component of a diffusers `I2VGenXLPipeline` directory.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        ModelStore::dir(dir, dtype, device)?.load_all()
    }

    /// The four models' configs.
    pub fn configs(&self) -> ModelConfigs {
        ModelConfigs {
            unet: self.unet.config.clone(),
            vae: self.vae.config.clone(),
            text: self.text_encoder.config.clone(),
            vision: self.image_encoder.config.clone(),
        }
    }

    /// Checks that the components fit together (widths, latent channels), so a mismatched
    /// directory fails before any work.
    pub fn check_compatible(&self) -> Result<()> {
        check_compatible(&self.configs())
    }
}

/// Checks that models of these configs fit together (widths, latent channels).
pub fn check_compatible(c: &ModelConfigs) -> Result<()> {
    let cross = c.unet.cross_attention_dim;
    let checks = [
        ("text_encoder hidden_size", c.text.hidden_size, cross),
        (
            "image_encoder projection_dim",
            c.vision.projection_dim,
            cross,
        ),
        (
            "vae latent_channels",
            c.vae.latent_channels,
            c.unet.in_channels,
        ),
        ("vae downsampling factor", c.vae.downsample_factor(), 8),
    ];
    for (what, got, want) in checks {
        if got != want {
            return Err(Error::InvalidArgument {
                field: "model",
                message: format!("{what} is {got} but the UNet needs {want}"),
            });
        }
    }
    Ok(())
}
