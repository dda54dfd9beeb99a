//! Resolving `--model` and `--device` into a loaded UNet and its scheduler.

use anyhow::{Context, Result, bail};
use candle_core::{DType, Device};
use std::path::Path;
use vivify_core::models::unet::{I2VGenXLUNet, WEIGHTS_STEM};
use vivify_core::scheduler::DdimConfig;
use vivify_core::weights::{find_weight_files, tiny_unet};

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

/// The UNet and scheduler config of `--model` (`tiny` or a diffusers directory).
pub fn load_unet(model: &str, dtype: DType, device: &Device) -> Result<(I2VGenXLUNet, DdimConfig)> {
    if model == "tiny" {
        return Ok((tiny_unet(dtype, device)?, DdimConfig::i2vgen_xl()));
    }
    let dir = Path::new(model);
    if !dir.is_dir() {
        bail!(
            "--model {model}: not `tiny` and not a directory (hub downloads are not implemented yet)"
        );
    }
    // f32 runs prefer the full-precision file, half-precision runs the fp16 variant; the fp16
    // lookup falls back to the plain file by itself.
    let unet_dir = dir.join("unet");
    let full_precision = find_weight_files(&unet_dir, WEIGHTS_STEM, None).is_ok();
    let variant = if dtype == DType::F32 && full_precision {
        None
    } else {
        Some("fp16")
    };
    let unet = I2VGenXLUNet::load(&unet_dir, variant, dtype, device)
        .with_context(|| format!("loading {}", unet_dir.display()))?;
    let scheduler = DdimConfig::from_file(dir.join("scheduler/scheduler_config.json"))?;
    Ok((unet, scheduler))
}
