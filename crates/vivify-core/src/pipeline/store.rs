//! Where a staged run loads each component from when a stage needs it: a diffusers directory
//! (weights memory-mapped, read per component) or the built-in tiny model (rebuilt from its
//! seeds, the same weights every time).

use super::models::{COMPONENTS, I2VGenXLModels};
use crate::config::{ModelIndex, UNetConfig, read_json};
use crate::memory::ModelConfigs;
use crate::models::clip::{
    ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModelWithProjection,
};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::unet::streaming::StreamedUNet;
use crate::models::unet::{I2VGenXLUNet, WEIGHTS_STEM, open_checkpoint};
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::scheduler::DdimConfig;
use crate::weights::{self, find_weight_files};
use crate::{Error, Result};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
enum Source {
    Dir(PathBuf),
    Tiny,
}

/// A model's components, loadable one at a time on one device at one dtype.
#[derive(Debug, Clone)]
pub struct ModelStore {
    source: Source,
    dtype: DType,
    device: Device,
}

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

impl ModelStore {
    /// A diffusers `I2VGenXLPipeline` directory: checks that it names every component; nothing
    /// is loaded yet.
    pub fn dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
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
        Ok(Self {
            source: Source::Dir(dir.to_path_buf()),
            dtype,
            device: device.clone(),
        })
    }

    /// The built-in tiny model.
    pub fn tiny(dtype: DType, device: &Device) -> Result<Self> {
        crate::device::check_compute_dtype(dtype, device)?;
        Ok(Self {
            source: Source::Tiny,
            dtype,
            device: device.clone(),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    fn part(&self, dir: &Path, name: &str, stem: &str) -> (PathBuf, Option<&'static str>) {
        let part = dir.join(name);
        let variant = variant_for(&part, stem, self.dtype);
        (part, variant)
    }

    /// The four models' configs (read from the directory's config files; no weights).
    pub fn configs(&self) -> Result<ModelConfigs> {
        match &self.source {
            Source::Tiny => Ok(weights::tiny_configs()),
            Source::Dir(dir) => {
                let c = |part: &str| dir.join(part).join("config.json");
                Ok(ModelConfigs {
                    unet: UNetConfig::from_file(&c("unet"))?,
                    vae: VaeConfig::from_file(&c("vae"))?,
                    text: ClipTextConfig::from_file(&c("text_encoder"))?,
                    vision: ClipVisionConfig::from_file(&c("image_encoder"))?,
                })
            }
        }
    }

    pub fn tokenizer(&self) -> Result<ClipTokenizer> {
        match &self.source {
            Source::Tiny => weights::tiny_clip_tokenizer(),
            Source::Dir(dir) => ClipTokenizer::from_dir(dir.join("tokenizer")),
        }
    }

    pub fn scheduler(&self) -> Result<DdimConfig> {
        match &self.source {
            Source::Tiny => Ok(DdimConfig::i2vgen_xl()),
            Source::Dir(dir) => {
                DdimConfig::from_file(dir.join("scheduler").join("scheduler_config.json"))
            }
        }
    }

    pub fn text_encoder(&self) -> Result<ClipTextModel> {
        match &self.source {
            Source::Tiny => weights::tiny_text_encoder(self.dtype, &self.device),
            Source::Dir(dir) => {
                let (part, variant) = self.part(dir, "text_encoder", "model");
                ClipTextModel::load(&part, variant, self.dtype, &self.device)
            }
        }
    }

    pub fn image_encoder(&self) -> Result<ClipVisionModelWithProjection> {
        match &self.source {
            Source::Tiny => weights::tiny_image_encoder(self.dtype, &self.device),
            Source::Dir(dir) => {
                let (part, variant) = self.part(dir, "image_encoder", "model");
                ClipVisionModelWithProjection::load(&part, variant, self.dtype, &self.device)
            }
        }
    }

    pub fn vae(&self) -> Result<AutoencoderKL> {
        match &self.source {
            Source::Tiny => weights::tiny_vae(self.dtype, &self.device),
            Source::Dir(dir) => {
                let (part, variant) = self.part(dir, "vae", "diffusion_pytorch_model");
                AutoencoderKL::load(&part, variant, self.dtype, &self.device)
            }
        }
    }

    pub fn unet(&self) -> Result<I2VGenXLUNet> {
        match &self.source {
            Source::Tiny => weights::tiny_unet(self.dtype, &self.device),
            Source::Dir(dir) => {
                let (part, variant) = self.part(dir, "unet", WEIGHTS_STEM);
                I2VGenXLUNet::load(&part, variant, self.dtype, &self.device)
            }
        }
    }

    /// The UNet with its blocks left in host memory (the memory-mapped checkpoint; for the
    /// tiny model, tensors on the CPU) and at most `resident_blocks` of them on the device.
    pub fn streamed_unet(&self, resident_blocks: usize) -> Result<StreamedUNet> {
        let (config, host) = match &self.source {
            Source::Tiny => (
                weights::tiny_unet_config(),
                weights::tiny_unet_host(self.dtype, &self.device)?,
            ),
            Source::Dir(dir) => {
                let (part, variant) = self.part(dir, "unet", WEIGHTS_STEM);
                open_checkpoint(&part, variant, self.dtype, &self.device)?
            }
        };
        Ok(StreamedUNet::new(&config, host, resident_blocks)?)
    }

    /// Every component at once: an all-resident run.
    pub fn load_all(&self) -> Result<I2VGenXLModels> {
        Ok(I2VGenXLModels {
            tokenizer: self.tokenizer()?,
            text_encoder: self.text_encoder()?,
            image_encoder: self.image_encoder()?,
            vae: self.vae()?,
            unet: self.unet()?,
            scheduler: self.scheduler()?,
        })
    }
}
