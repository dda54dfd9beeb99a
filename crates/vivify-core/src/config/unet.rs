//! `unet/config.json` of an I2VGenXLUNet.

use crate::Result;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownBlockType {
    CrossAttnDownBlock3D,
    DownBlock3D,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UpBlockType {
    UpBlock3D,
    CrossAttnUpBlock3D,
}

/// The UNet's constructor arguments, defaults as in diffusers' `I2VGenXLUNet.__init__`.
///
/// `attention_head_dim` is the per-head width of every spatial and temporal attention (diffusers
/// passes it on as the blocks' head count, which then divide channels by it); the config's
/// `num_attention_heads` is ignored by diffusers and therefore not read here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub down_block_types: Vec<DownBlockType>,
    pub up_block_types: Vec<UpBlockType>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    pub norm_num_groups: usize,
    pub cross_attention_dim: usize,
    pub attention_head_dim: usize,
}

impl Default for UNetConfig {
    fn default() -> Self {
        use DownBlockType::*;
        use UpBlockType::*;
        Self {
            in_channels: 4,
            out_channels: 4,
            down_block_types: vec![
                CrossAttnDownBlock3D,
                CrossAttnDownBlock3D,
                CrossAttnDownBlock3D,
                DownBlock3D,
            ],
            up_block_types: vec![
                UpBlock3D,
                CrossAttnUpBlock3D,
                CrossAttnUpBlock3D,
                CrossAttnUpBlock3D,
            ],
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            norm_num_groups: 32,
            cross_attention_dim: 1024,
            attention_head_dim: 64,
        }
    }
}

/// Heads of `transformer_in`, fixed by diffusers.
pub const TRANSFORMER_IN_HEADS: usize = 8;

impl UNetConfig {
    /// The published `ali-vilab/i2vgen-xl` UNet (identical to the constructor defaults).
    pub fn i2vgen_xl() -> Self {
        Self::default()
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self> {
        crate::config::read_validated(path, Self::validate)
    }

    /// Width of the time, fps and image-embedding MLPs.
    pub fn time_embed_dim(&self) -> usize {
        self.block_out_channels[0] * 4
    }

    /// Checks the shape rules diffusers' constructor relies on, so a bad config fails here and not
    /// deep inside a forward pass.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "down_block_types ({}), up_block_types ({}) and block_out_channels ({n}) must have the same length",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if self.in_channels != 4 {
            // The image-latent branch is hard-wired to 4 channels in diffusers.
            return Err(format!("in_channels must be 4, got {}", self.in_channels));
        }
        if self.layers_per_block == 0 {
            return Err("layers_per_block must be at least 1".into());
        }
        let g = self.norm_num_groups;
        let d = self.attention_head_dim;
        if g == 0 || d == 0 || self.cross_attention_dim == 0 {
            return Err(
                "norm_num_groups, attention_head_dim and cross_attention_dim must be positive"
                    .into(),
            );
        }
        for &c in &self.block_out_channels {
            if c % g != 0 {
                return Err(format!(
                    "block_out_channels entry {c} is not divisible by norm_num_groups {g}"
                ));
            }
            if c % d != 0 {
                return Err(format!(
                    "block_out_channels entry {c} is not divisible by attention_head_dim {d}"
                ));
            }
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
          "_class_name": "I2VGenXLUNet", "_diffusers_version": "0.25.0.dev0",
          "attention_head_dim": 64, "block_out_channels": [320, 640, 1280, 1280],
          "cross_attention_dim": 1024,
          "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
          "in_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "num_attention_heads": null,
          "out_channels": 4, "sample_size": 32,
          "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"]
        }"#;
        let config: UNetConfig = serde_json::from_str(text).unwrap();
        assert_eq!(config, UNetConfig::i2vgen_xl());
        assert!(config.validate().is_ok());
    }

    #[test]
    fn missing_fields_take_diffusers_defaults() {
        let config: UNetConfig = serde_json::from_str(r#"{"layers_per_block": 1}"#).unwrap();
        assert_eq!(config.layers_per_block, 1);
        assert_eq!(config.block_out_channels, vec![320, 640, 1280, 1280]);
        assert_eq!(config.cross_attention_dim, 1024);
    }

    #[test]
    fn inconsistent_config_is_refused() {
        let config = UNetConfig {
            norm_num_groups: 7,
            ..UNetConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("norm_num_groups"));
        let config = UNetConfig {
            block_out_channels: vec![320, 640],
            ..UNetConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("same length"));
    }
}
