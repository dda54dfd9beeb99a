//! `vivify serve`: the web page and HTTP API (crates/vivify-serve); this file only turns flags
//! into its configuration.

use crate::args::{DeviceArgs, ModelArgs};
use crate::model::{ModelSource, resolve_model};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vivify_core::models::tokenizer::ClipTokenizer;
use vivify_core::pipeline::models::I2VGenXLModels;
use vivify_core::pipeline::store::ModelStore;
use vivify_core::weights::tiny_models;
use vivify_serve::state::Info;
use vivify_serve::{Limits, ServeConfig, WorkerConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// Where uploads, videos, the job store and logs live (default: the platform data
    /// directory's `vivify`, e.g. ~/.local/share/vivify).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Free the model's memory after this long without jobs (e.g. 30s, 10m, 1h); it is loaded
    /// again for the next job. Default: kept loaded.
    #[arg(long)]
    pub unload_after: Option<String>,
    /// Memory the planner plans for (e.g. 24GiB); default: the host's available memory.
    #[arg(long)]
    pub memory_budget: Option<String>,
    /// Parameter ranges: `standard` (frames 8-32, steps 10-100, sizes 64-2048) or `dev` (also
    /// allows 2+ frames, 1+ step and sizes from 16, for quick tests).
    #[arg(long, default_value = "standard")]
    pub limits: String,
    /// Testing aid: pause this long after each denoising step.
    #[arg(long, hide = true, default_value_t = 0)]
    pub step_delay_ms: u64,
    /// Testing aid: every job's denoising runs out of memory until its plan is this many rungs
    /// down its ladder (as `generate --simulate-denoise-oom`).
    #[arg(long, hide = true, value_name = "RUNGS")]
    pub simulate_denoise_oom: Option<usize>,
}

/// "30s", "10m", "1h", "500ms" or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("--unload-after {text:?}: expected e.g. 30s, 10m, 1h"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => bail!("--unload-after {text:?}: unknown unit {other:?} (ms, s, m, h)"),
    };
    if !secs.is_finite() || secs < 0.0 {
        bail!("--unload-after {text:?}: must be a positive duration");
    }
    Ok(Duration::from_secs_f64(secs))
}

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    let limits = Limits::by_name(&args.limits)
        .with_context(|| format!("--limits {}: expected standard or dev", args.limits))?;
    let unload_after = args
        .unload_after
        .as_deref()
        .map(parse_duration)
        .transpose()?;
    let memory_budget = args
        .memory_budget
        .as_deref()
        .map(vivify_core::memory::parse_bytes)
        .transpose()?;
    let (device, dtype) = args.device.resolve()?;
    vivify_core::device::check_compute_dtype(dtype, &device)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(vivify_serve::default_data_dir);
    let _log_guard = vivify_serve::logging::init(&data_dir.join("logs"))?;

    // Hub models are fetched once here; the worker loads (and reloads) from the local copy.
    let source = resolve_model(&args.model)?;
    let (tokenizer, configs_from): (ClipTokenizer, String) = match &source {
        ModelSource::Tiny => (
            tiny_models(candle_core::DType::F32, &candle_core::Device::Cpu)?.tokenizer,
            "tiny".into(),
        ),
        ModelSource::Dir(dir) => (
            ClipTokenizer::from_dir(dir.join("tokenizer"))
                .with_context(|| format!("--model {}: tokenizer", args.model.model))?,
            dir.display().to_string(),
        ),
    };
    let model_configs = crate::commands::plan::model_configs(&configs_from)?;
    // Jobs whose plan loads models per stage take them from here.
    let store = match &source {
        ModelSource::Tiny => ModelStore::tiny(dtype, &device)?,
        ModelSource::Dir(dir) => ModelStore::dir(dir, dtype, &device)
            .with_context(|| format!("--model {}", args.model.model))?,
    };
    let loader_device = device.clone();
    let loader: vivify_serve::ModelLoader = Arc::new(move || -> Result<I2VGenXLModels> {
        Ok(match &source {
            ModelSource::Tiny => tiny_models(dtype, &loader_device)?,
            ModelSource::Dir(dir) => I2VGenXLModels::load(dir, dtype, &loader_device)?,
        })
    });
    let config = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        data_dir,
        info: Info {
            model: args.model.model.clone(),
            device: crate::args::device_label(&device),
            dtype,
            limits,
            memory_budget,
            model_configs: Some(model_configs),
            tokenizer: Some(tokenizer),
        },
        worker: WorkerConfig {
            loader,
            store: Some(store),
            device,
            dtype,
            unload_after,
            step_delay: Duration::from_millis(args.step_delay_ms),
            simulate_denoise_oom: args.simulate_denoise_oom,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(vivify_serve::run_until_signal(config))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
