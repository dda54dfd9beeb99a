//! Resolving `--model` and `--device`.

use crate::args::ModelArgs;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use std::path::{Path, PathBuf};
use vivify_core::pipeline::store::ModelStore;
use vivify_hub::{FileSelection, HubConfig, indicatif_progress, snapshot};

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" if candle_core::utils::cuda_is_available() => {
            Ok(Device::new_cuda(0).unwrap_or(Device::Cpu))
        }
        "auto" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = s
                .strip_prefix("cuda:")
                .map_or(Ok(0), str::parse)
                .with_context(|| format!("--device {s}: expected cuda:N"))?;
            if !candle_core::utils::cuda_is_available() {
                bail!("--device {s}: this build has no CUDA support (build with --features cuda)");
            }
            Ok(Device::new_cuda(ordinal)?)
        }
        other => bail!("--device {other}: expected auto, cpu, cuda or cuda:N"),
    }
}

pub enum ModelSource {
    Tiny,
    Dir(PathBuf),
}

/// `org/name` (or a bare legacy name): letters, digits, `-`, `_`, `.`, at most one `/`.
fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// `tiny`, an existing directory, or a hub repo id fetched into (or found in) the cache.
pub fn resolve_model(args: &ModelArgs) -> Result<ModelSource> {
    let model = args.model.as_str();
    if model == "tiny" {
        return Ok(ModelSource::Tiny);
    }
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(ModelSource::Dir(path.to_path_buf()));
    }
    if !is_repo_id(model) {
        bail!("--model {model}: no such directory, and not `tiny` or a hub repo id (org/name)");
    }
    let mut config = HubConfig::from_env();
    config.offline |= args.offline;
    let progress = indicatif_progress(indicatif::MultiProgress::new());
    let dir = snapshot(
        &config,
        model,
        &args.revision,
        &FileSelection::diffusers(true),
        &progress,
    )
    .with_context(|| format!("--model {model}: fetching from the Hugging Face hub"))?;
    Ok(ModelSource::Dir(dir))
}

/// The components of `--model`, to load all at once or per stage.
pub fn model_store(args: &ModelArgs, dtype: DType, device: &Device) -> Result<ModelStore> {
    match resolve_model(args)? {
        ModelSource::Tiny => Ok(ModelStore::tiny(dtype, device)?),
        ModelSource::Dir(dir) => {
            ModelStore::dir(&dir, dtype, device).with_context(|| format!("--model {}", args.model))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_repo_id;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id("ali-vilab/i2vgen-xl"));
        assert!(is_repo_id("gpt2"));
        assert!(!is_repo_id("/abs/path"));
        assert!(!is_repo_id("./models/x"));
        assert!(!is_repo_id("a/b/c"));
        assert!(!is_repo_id("../x"));
    }
}
