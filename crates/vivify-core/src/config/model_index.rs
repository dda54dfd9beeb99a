//! `model_index.json`: which class each component of a diffusers pipeline is.

use serde::Deserialize;
use std::collections::BTreeMap;

/// One component entry, written by diffusers as `["library", "ClassName"]` (or null when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentRef {
    pub library: String,
    pub class_name: String,
}

/// The parsed `model_index.json`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ModelIndex {
    #[serde(rename = "_class_name", default)]
    pub class_name: String,
    #[serde(rename = "_diffusers_version", default)]
    pub diffusers_version: Option<String>,
    /// Components by folder name (`unet`, `vae`, ...). Underscore-prefixed metadata is skipped.
    #[serde(flatten, deserialize_with = "components")]
    pub components: BTreeMap<String, ComponentRef>,
}

impl ModelIndex {
    pub fn component(&self, name: &str) -> Option<&ComponentRef> {
        self.components.get(name)
    }
}

fn components<'de, D>(de: D) -> Result<BTreeMap<String, ComponentRef>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let raw: BTreeMap<String, serde_json::Value> = BTreeMap::deserialize(de)?;
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        if key.starts_with('_') {
            continue;
        }
        // Anything that is not a [library, class] pair (null, booleans like
        // `requires_safety_checker`) is a pipeline option, not a component.
        if let Some([lib, class]) = value.as_array().map(Vec::as_slice)
            && let (Some(lib), Some(class)) = (lib.as_str(), class.as_str())
        {
            out.insert(
                key,
                ComponentRef {
                    library: lib.to_string(),
                    class_name: class.to_string(),
                },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_published_index() {
        let text = r#"{
          "_class_name": "I2VGenXLPipeline",
          "_diffusers_version": "0.25.0.dev0",
          "feature_extractor": ["transformers", "CLIPImageProcessor"],
          "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
          "scheduler": ["diffusers", "DDIMScheduler"],
          "text_encoder": ["transformers", "CLIPTextModel"],
          "tokenizer": ["transformers", "CLIPTokenizer"],
          "unet": ["diffusers", "I2VGenXLUNet"],
          "vae": ["diffusers", "AutoencoderKL"],
          "safety_checker": [null, null],
          "requires_safety_checker": false
        }"#;
        let index: ModelIndex = serde_json::from_str(text).unwrap();
        assert_eq!(index.class_name, "I2VGenXLPipeline");
        assert_eq!(index.components.len(), 7);
        assert_eq!(index.component("unet").unwrap().class_name, "I2VGenXLUNet");
        assert!(index.component("safety_checker").is_none());
    }
}
