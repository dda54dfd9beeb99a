//! `vae/config.json` of an AutoencoderKL.

use crate::Result;
use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeDownBlockType {
    DownEncoderBlock2D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VaeUpBlockType {
    UpDecoderBlock2D,
}

/// The VAE's constructor arguments, defaults as in diffusers' `AutoencoderKL.__init__` (so a
/// field missing from a config takes diffusers' value, not the published model's).
///
/// `scaling_factor` and `shift_factor` are not used by the model itself: the pipeline multiplies
/// latents by the factor after encoding and divides by it before decoding, reading it from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<VaeDownBlockType>,
    pub up_block_types: Vec<VaeUpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub act_fn: String,
    pub latent_channels: usize,
    pub norm_num_groups: usize,
    /// diffusers accepts an int or a list; only tiling reads it, from the first entry.
    #[serde(deserialize_with = "int_or_first")]
    pub sample_size: usize,
    pub scaling_factor: f64,
    pub shift_factor: Option<f64>,
    /// Run in f32 even when the rest of the model is in f16 (the published VAE overflows in f16).
    pub force_upcast: bool,
    pub use_quant_conv: bool,
    pub use_post_quant_conv: bool,
    pub mid_block_add_attention: bool,
}

fn int_or_first<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IntOrList {
        Int(usize),
        List(Vec<usize>),
    }
    match IntOrList::deserialize(d)? {
        IntOrList::Int(n) => Ok(n),
        IntOrList::List(v) => v
            .first()
            .copied()
            .ok_or_else(|| serde::de::Error::custom("sample_size is an empty list")),
    }
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D],
            up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: 32,
            scaling_factor: 0.18215,
            shift_factor: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// The published `ali-vilab/i2vgen-xl` VAE (`vae/config.json`).
    pub fn i2vgen_xl() -> Self {
        Self {
            down_block_types: vec![VaeDownBlockType::DownEncoderBlock2D; 4],
            up_block_types: vec![VaeUpBlockType::UpDecoderBlock2D; 4],
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            sample_size: 768,
            scaling_factor: 0.18125,
            ..Self::default()
        }
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        crate::config::read_validated(path, Self::validate)
    }

    /// How much smaller the latent is than the image, per side.
    pub fn downsample_factor(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks the shape rules diffusers' constructor relies on, so a bad config fails here and not
    /// deep inside a forward pass.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        if n > 16 {
            return Err(format!("{n} blocks is more than any VAE uses"));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.in_channels == 0 || self.out_channels == 0 || self.latent_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        if self.layers_per_block == 0 {
            return Err("layers_per_block must be at least 1".into());
        }
        if !matches!(self.act_fn.as_str(), "silu" | "swish") {
            return Err(format!(
                "act_fn {:?} is not supported (only silu)",
                self.act_fn
            ));
        }
        let g = self.norm_num_groups;
        if g == 0 {
            return Err("norm_num_groups must be positive".into());
        }
        for &c in &self.block_out_channels {
            if c == 0 || c % g != 0 {
                return Err(format!(
                    "block_out_channels entry {c} is not a positive multiple of norm_num_groups {g}"
                ));
            }
        }
        if !self.scaling_factor.is_finite() || self.scaling_factor == 0.0 {
            // The pipeline divides latents by it before decoding.
            return Err(format!(
                "scaling_factor must be finite and non-zero, got {}",
                self.scaling_factor
            ));
        }
        if self.shift_factor.is_some_and(|s| !s.is_finite()) {
            return Err("shift_factor must be finite".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_config_parses_with_unknown_fields() {
        let text = r#"{
          "_class_name": "AutoencoderKL", "_diffusers_version": "0.25.0.dev0",
          "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
          "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
          "force_upcast": true, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
          "norm_num_groups": 32, "out_channels": 3, "sample_size": 768, "scaling_factor": 0.18125,
          "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
        }"#;
        let config: VaeConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config, VaeConfig::i2vgen_xl());
        assert!(config.validate().is_ok());
        assert_eq!(config.scaling_factor, 0.18125);
        assert_eq!(config.downsample_factor(), 8);
    }

    #[test]
    fn missing_fields_take_diffusers_defaults() {
        let config: VaeConfig =
            serde_json::from_str(r#"{"latent_channels": 8, "sample_size": [512, 512]}"#).unwrap();
        assert_eq!(config.latent_channels, 8);
        assert_eq!(config.sample_size, 512);
        assert_eq!(config.block_out_channels, vec![64]);
        assert_eq!(config.scaling_factor, 0.18215);
        assert_eq!(config.shift_factor, None);
        assert!(config.use_quant_conv && config.mid_block_add_attention);
    }

    #[test]
    fn inconsistent_config_is_refused() {
        let bad = |c: VaeConfig| c.validate().unwrap_err();
        let base = VaeConfig::i2vgen_xl();
        assert!(
            bad(VaeConfig {
                norm_num_groups: 7,
                ..base.clone()
            })
            .contains("norm_num_groups")
        );
        assert!(
            bad(VaeConfig {
                block_out_channels: vec![128, 256],
                ..base.clone()
            })
            .contains("same length")
        );
        assert!(
            bad(VaeConfig {
                act_fn: "gelu".into(),
                ..base.clone()
            })
            .contains("act_fn")
        );
        assert!(
            bad(VaeConfig {
                scaling_factor: 0.0,
                ..base.clone()
            })
            .contains("scaling_factor")
        );
        let unknown_block = serde_json::from_str::<VaeConfig>(
            r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#,
        );
        assert!(unknown_block.is_err());
    }
}
