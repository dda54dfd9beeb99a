//! Resolving `--model` and `--device`.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use std::path::Path;
use vivify_core::pipeline::models::I2VGenXLModels;
use vivify_core::weights::tiny_models;

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
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
        other => bail!("--device {other}: expected cpu, cuda or cuda:N"),
    }
}

/// Every component of `--model`: `tiny` or a diffusers directory.
pub fn load_models(model: &str, dtype: DType, device: &Device) -> Result<I2VGenXLModels> {
    if model == "tiny" {
        return Ok(tiny_models(dtype, device)?);
    }
    let dir = Path::new(model);
    if !dir.is_dir() {
        bail!("--model {model}: not `tiny` and not a directory");
    }
    I2VGenXLModels::load(dir, dtype, device).with_context(|| format!("--model {model}"))
}
