//! The five components of an I2VGen-XL pipeline, loaded from a diffusers directory or built as
//! the tiny random model.

use crate::config::{ModelIndex, read_json};
use crate::models::clip::{ClipTextModel, ClipVisionModelWithProjection};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::I2VGenXLUNet;
use crate::models::vae::AutoencoderKL;
use crate::scheduler::DdimConfig;
use crate::weights::find_weight_files;
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

/// The weight variant to read: f32 runs take the full-precision file when there is one, half
/// runs the `fp16` file; either falls back to what the directory has.
fn variant_for(dir: &Path, stem: &str, dtype: DType) -> Option<&'static str> {
    let full_precision = find_weight_files(dir, stem, None).is_ok();
    if dtype == DType::F32 && full_precision {
        None
    } else {
        Some("fp16")
    }
}

impl I2VGenXLModels {
    /// Loads every component of a diffusers `I2VGenXLPipeline` directory.
    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::InvalidArgument {
                field: "model",
                message: format!("{}: no such directory", dir.display()),
            });
        }
        let index_path = dir.join("model_index.json");
        let index: ModelIndex = read_json(&index_path)?;
        for (name, _) in COMPONENTS {
            if index.component(name).is_none() {
                return Err(Error::Config {
                    path: index_path.display().to_string(),
                    message: format!("no `{name}` component"),
                });
            }
        }
        let part = |name: &str| dir.join(name);
        let v = |name: &str, stem: &str| variant_for(&part(name), stem, dtype);
        Ok(Self {
            tokenizer: ClipTokenizer::from_dir(part("tokenizer"))?,
            text_encoder: ClipTextModel::load(
                &part("text_encoder"),
                v("text_encoder", "model"),
                dtype,
                device,
            )?,
            image_encoder: ClipVisionModelWithProjection::load(
                &part("image_encoder"),
                v("image_encoder", "model"),
                dtype,
                device,
            )?,
            vae: AutoencoderKL::load(
                &part("vae"),
                v("vae", "diffusion_pytorch_model"),
                dtype,
                device,
            )?,
            unet: I2VGenXLUNet::load(
                &part("unet"),
                v("unet", "diffusion_pytorch_model"),
                dtype,
                device,
            )?,
            scheduler: DdimConfig::from_file(part("scheduler").join("scheduler_config.json"))?,
        })
    }

    /// Checks that the components fit together (widths, latent channels), so a mismatched
    /// directory fails before any work.
    pub fn check_compatible(&self) -> Result<()> {
        let cross = self.unet.config.cross_attention_dim;
        let checks = [
            (
                "text_encoder hidden_size",
                self.text_encoder.config.hidden_size,
                cross,
            ),
            (
                "image_encoder projection_dim",
                self.image_encoder.config.projection_dim,
                cross,
            ),
            (
                "vae latent_channels",
                self.vae.config.latent_channels,
                self.unet.config.in_channels,
            ),
            (
                "vae downsampling factor",
                self.vae.config.downsample_factor(),
                8,
            ),
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
}
