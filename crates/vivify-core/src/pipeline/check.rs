//! `check-model`: every way a diffusers I2VGen-XL directory differs from what vivify loads,
//! found from configs and safetensors headers alone (no tensor data is read).

use super::models::COMPONENTS;
use crate::config::{ModelIndex, UNetConfig, read_json};
use crate::models::clip::text::TEXT_PREFIX;
use crate::models::clip::vision::VISION_PREFIX;
use crate::models::clip::{
    ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModelWithProjection,
    drop_ignored_buffers, has_prefix,
};
use crate::models::tokenizer::ClipTokenizer;
use crate::models::vae::{AutoencoderKL, VaeConfig};
use crate::scheduler::DdimConfig;
use crate::weights::{Checkpoint, TensorSpec, find_weight_files, unet_spec};
use crate::{Error, Result};
use std::path::Path;

/// The result for one component (or one weight file set of it).
#[derive(Debug, Clone)]
pub struct ComponentReport {
    pub component: String,
    /// What was checked: file names, parameter count.
    pub detail: String,
    pub problems: Vec<String>,
}

fn report(component: &str, detail: impl Into<String>, problems: Vec<String>) -> ComponentReport {
    ComponentReport {
        component: component.into(),
        detail: detail.into(),
        problems,
    }
}

/// The tensors a component's checkpoint must hold, given its config and the checkpoint (whose
/// layout decides the CLIP prefix).
fn expected_spec(
    component: &str,
    dir: &Path,
    checkpoint: &mut Checkpoint,
) -> Result<Vec<TensorSpec>> {
    let config = dir.join("config.json");
    Ok(match component {
        "unet" => unet_spec(&UNetConfig::from_file(&config)?)?,
        "vae" => AutoencoderKL::spec(&VaeConfig::from_file(&config)?)?,
        "text_encoder" => {
            drop_ignored_buffers(checkpoint);
            ClipTextModel::spec(
                &ClipTextConfig::from_file(&config)?,
                has_prefix(checkpoint, TEXT_PREFIX),
            )?
        }
        "image_encoder" => {
            drop_ignored_buffers(checkpoint);
            let prefixed = has_prefix(checkpoint, VISION_PREFIX);
            ClipVisionModelWithProjection::spec(&ClipVisionConfig::from_file(&config)?, prefixed)?
        }
        other => unreachable!("no weights for {other}"),
    })
}

/// Checks each weight file set (plain and fp16 variant) of a component.
fn check_weights(component: &str, dir: &Path, stem: &str) -> Vec<ComponentReport> {
    let mut reports = Vec::new();
    let plain = find_weight_files(dir, stem, None).ok();
    let fp16 = find_weight_files(dir, stem, Some("fp16"))
        .ok()
        .filter(|f| Some(f) != plain.as_ref());
    if plain.is_none() && fp16.is_none() {
        return vec![report(
            component,
            dir.display().to_string(),
            vec![format!(
                "no {stem}[.fp16].safetensors weights in {}",
                dir.display()
            )],
        )];
    }
    for files in [plain, fp16].into_iter().flatten() {
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let outcome = Checkpoint::open(&files).and_then(|mut checkpoint| {
            let spec = expected_spec(component, dir, &mut checkpoint)?;
            Ok((
                checkpoint.mismatches(&spec),
                spec.iter().map(TensorSpec::numel).sum::<usize>(),
                spec.len(),
            ))
        });
        reports.push(match outcome {
            Ok((problems, params, tensors)) => report(
                component,
                format!(
                    "{}: {tensors} tensors, {params} parameters",
                    names.join(", ")
                ),
                problems,
            ),
            Err(e) => report(component, names.join(", "), vec![e.to_string()]),
        });
    }
    reports
}

/// Checks every component of the directory `dir` (which must hold `model_index.json`).
pub fn check_model_dir(dir: &Path) -> Result<Vec<ComponentReport>> {
    if !dir.is_dir() {
        return Err(Error::InvalidArgument {
            field: "model",
            message: format!("{}: no such directory", dir.display()),
        });
    }
    let index: ModelIndex = read_json(&dir.join("model_index.json"))?;
    let mut reports = Vec::new();
    for (name, stem) in COMPONENTS {
        let part = dir.join(name);
        if index.component(name).is_none() {
            reports.push(report(
                name,
                "model_index.json",
                vec![format!("model_index.json has no `{name}` component")],
            ));
            continue;
        }
        match stem {
            Some(stem) => reports.extend(check_weights(name, &part, stem)),
            None if name == "tokenizer" => reports.push(match ClipTokenizer::from_dir(&part) {
                Ok(t) => report(
                    name,
                    format!("{} tokens per prompt", t.max_length()),
                    vec![],
                ),
                Err(e) => report(name, part.display().to_string(), vec![e.to_string()]),
            }),
            None => reports.push(
                match DdimConfig::from_file(part.join("scheduler_config.json")) {
                    Ok(_) => report(name, "DDIM", vec![]),
                    Err(e) => report(name, part.display().to_string(), vec![e.to_string()]),
                },
            ),
        }
    }
    Ok(reports)
}

/// Checks a single component directory, recognised by the class its `config.json` names
/// (`_class_name` for diffusers, `architectures` for transformers).
pub fn check_component_dir(dir: &Path) -> Result<Vec<ComponentReport>> {
    let config_path = dir.join("config.json");
    let config: serde_json::Value = read_json(&config_path)?;
    let class = config["_class_name"]
        .as_str()
        .or_else(|| config["architectures"][0].as_str())
        .unwrap_or_default();
    let (component, stem) = match class {
        "I2VGenXLUNet" => ("unet", "diffusion_pytorch_model"),
        "AutoencoderKL" => ("vae", "diffusion_pytorch_model"),
        "CLIPTextModel" => ("text_encoder", "model"),
        "CLIPVisionModelWithProjection" => ("image_encoder", "model"),
        other => {
            return Err(Error::Config {
                path: config_path.display().to_string(),
                message: format!("unknown component class {other:?}"),
            });
        }
    };
    Ok(check_weights(component, dir, stem))
}
