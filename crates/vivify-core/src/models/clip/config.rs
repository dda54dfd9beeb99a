//! The `config.json` of a CLIP text encoder (`CLIPTextConfig`) or image encoder
//! (`CLIPVisionConfig`). Unknown fields are ignored; missing ones take transformers' defaults.

use crate::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The MLP activation, by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact GELU, x·Φ(x) with the error function (PyTorch's `gelu`, not the tanh form).
    Gelu,
    /// x·σ(1.702·x), what the original OpenAI CLIP weights were trained with.
    QuickGelu,
}

/// `CLIPTextConfig`: the fields the text model reads, with transformers 5.24's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipTextConfig {
    /// The text encoder of `ali-vilab/i2vgen-xl`: OpenCLIP ViT-H/14's text tower, all 24 layers.
    pub fn i2vgen_xl() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            hidden_act: Activation::Gelu,
            ..Self::default()
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_validated(path, Self::validate)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        check_heads(self.hidden_size, self.num_attention_heads)?;
        check_eps(self.layer_norm_eps)?;
        if self.num_hidden_layers == 0 {
            return Err("num_hidden_layers must be at least 1".into());
        }
        if self.vocab_size == 0 || self.max_position_embeddings == 0 || self.intermediate_size == 0
        {
            return Err(
                "vocab_size, max_position_embeddings and intermediate_size must be positive".into(),
            );
        }
        Ok(())
    }
}

/// `CLIPVisionConfig`: the fields the vision model reads, with transformers 5.24's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub projection_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            projection_dim: 512,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl ClipVisionConfig {
    /// The image encoder of `ali-vilab/i2vgen-xl`: OpenCLIP ViT-H/14 with a 1024-wide projection.
    pub fn i2vgen_xl() -> Self {
        Self {
            hidden_size: 1280,
            intermediate_size: 5120,
            projection_dim: 1024,
            num_hidden_layers: 32,
            num_attention_heads: 16,
            patch_size: 14,
            hidden_act: Activation::Gelu,
            ..Self::default()
        }
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        crate::config::read_validated(path, Self::validate)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        check_heads(self.hidden_size, self.num_attention_heads)?;
        check_eps(self.layer_norm_eps)?;
        if self.patch_size == 0 || self.image_size < self.patch_size {
            return Err(format!(
                "image_size {} must be at least patch_size {} (> 0)",
                self.image_size, self.patch_size
            ));
        }
        if self.num_channels == 0 || self.projection_dim == 0 || self.intermediate_size == 0 {
            return Err(
                "num_channels, projection_dim and intermediate_size must be positive".into(),
            );
        }
        Ok(())
    }

    /// Patches per side: the convolution's stride drops any remainder, as in transformers.
    pub fn patches_per_side(&self) -> usize {
        self.image_size / self.patch_size
    }
}

fn check_heads(hidden: usize, heads: usize) -> std::result::Result<(), String> {
    if heads == 0 || hidden == 0 || !hidden.is_multiple_of(heads) {
        return Err(format!(
            "hidden_size {hidden} is not divisible into {heads} attention heads"
        ));
    }
    Ok(())
}

fn check_eps(eps: f64) -> std::result::Result<(), String> {
    if !(eps.is_finite() && eps > 0.0) {
        return Err(format!("layer_norm_eps must be positive, got {eps}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_transformers_and_unknown_fields_are_ignored() {
        let text: ClipTextConfig =
            serde_json::from_str(r#"{"hidden_size": 64, "torch_dtype": "float16"}"#).unwrap();
        assert_eq!(text.hidden_size, 64);
        assert_eq!(text.hidden_act, Activation::QuickGelu);
        assert_eq!((text.vocab_size, text.max_position_embeddings), (49408, 77));
        let vision: ClipVisionConfig =
            serde_json::from_str(r#"{"hidden_act": "gelu", "model_type": "x"}"#).unwrap();
        assert_eq!(vision.hidden_act, Activation::Gelu);
        assert_eq!((vision.patch_size, vision.layer_norm_eps), (32, 1e-5));
    }

    #[test]
    fn invalid_configs_are_refused() {
        let bad = ClipTextConfig {
            num_attention_heads: 5,
            ..ClipTextConfig::i2vgen_xl()
        };
        assert!(bad.validate().unwrap_err().contains("heads"));
        let bad = ClipVisionConfig {
            patch_size: 0,
            ..ClipVisionConfig::i2vgen_xl()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<ClipTextConfig>(r#"{"hidden_act": "relu"}"#).is_err());
        assert!(ClipTextConfig::i2vgen_xl().validate().is_ok());
        assert!(ClipVisionConfig::i2vgen_xl().validate().is_ok());
    }
}
