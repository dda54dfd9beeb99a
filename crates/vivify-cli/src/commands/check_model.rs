//! `vivify check-model PATH`: reports every way a model directory differs from what vivify loads.

use crate::args::CheckModelArgs;
use anyhow::{Result, bail};
use std::path::Path;
use std::process::ExitCode;
use vivify_core::config::{ModelIndex, UNetConfig, read_json};
use vivify_core::models::unet::WEIGHTS_STEM;
use vivify_core::weights::{Checkpoint, TensorSpec, find_weight_files, unet_spec};

/// Components this version can check; the rest are listed as not yet checked.
const CHECKED: [&str; 1] = ["unet"];

pub fn run(args: &CheckModelArgs) -> Result<ExitCode> {
    let root = args.path.as_path();
    if !root.is_dir() {
        bail!("{}: not a directory", root.display());
    }
    let index_path = root.join("model_index.json");
    let mut problems = 0;
    if index_path.is_file() {
        let index: ModelIndex = read_json(&index_path)?;
        println!(
            "{}: {} ({} components)",
            root.display(),
            index.class_name,
            index.components.len()
        );
        for (name, component) in &index.components {
            if CHECKED.contains(&name.as_str()) {
                problems += check_unet(&root.join(name))?;
            } else {
                println!(
                    "  {name} ({}): not checked by this version",
                    component.class_name
                );
            }
        }
        if index.component("unet").is_none() {
            println!("  unet: missing from model_index.json");
            problems += 1;
        }
    } else if root.join("config.json").is_file() {
        // A component directory on its own.
        problems += check_unet(root)?;
    } else {
        bail!(
            "{}: neither model_index.json nor config.json found",
            root.display()
        );
    }
    if problems == 0 {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s)");
        Ok(ExitCode::FAILURE)
    }
}

/// Prints the UNet's status and returns its number of problems.
fn check_unet(dir: &Path) -> Result<usize> {
    let config = match UNetConfig::from_file(&dir.join("config.json")) {
        Ok(c) => c,
        Err(e) => {
            println!("  unet: {e}");
            return Ok(1);
        }
    };
    let spec = unet_spec(&config)?;
    let params: usize = spec.iter().map(TensorSpec::numel).sum();
    let mut problems = 0;
    for variant in [None, Some("fp16")] {
        let Ok(files) = find_weight_files(dir, WEIGHTS_STEM, variant) else {
            continue;
        };
        // The fp16 lookup falls back to the plain file; report each file set once.
        if variant.is_some()
            && files
                .iter()
                .all(|f| !f.to_string_lossy().contains(".fp16."))
        {
            continue;
        }
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let found = Checkpoint::open(&files)?.mismatches(&spec);
        if found.is_empty() {
            println!(
                "  unet ({}): ok, {} tensors, {params} parameters",
                names.join(", "),
                spec.len()
            );
        } else {
            println!("  unet ({}): {} problem(s)", names.join(", "), found.len());
            for p in &found {
                println!("    {p}");
            }
            problems += found.len();
        }
    }
    if find_weight_files(dir, WEIGHTS_STEM, Some("fp16")).is_err() {
        println!("  unet: no weights found in {}", dir.display());
        problems += 1;
    }
    Ok(problems)
}
