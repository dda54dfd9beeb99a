//! `vivify check-model PATH`: reports every way a model directory differs from what vivify loads.

use crate::args::CheckModelArgs;
use anyhow::{Result, bail};
use std::process::ExitCode;
use vivify_core::pipeline::check::{check_component_dir, check_model_dir};

pub fn run(args: &CheckModelArgs) -> Result<ExitCode> {
    let root = args.path.as_path();
    let reports = if root.join("model_index.json").is_file() {
        check_model_dir(root)?
    } else if root.join("config.json").is_file() {
        check_component_dir(root)?
    } else {
        bail!(
            "{}: neither model_index.json nor config.json found",
            root.display()
        );
    };
    println!("{}", root.display());
    let mut problems = 0;
    for r in &reports {
        let status = if r.problems.is_empty() {
            "ok".to_string()
        } else {
            format!("{} problem(s)", r.problems.len())
        };
        println!("  {} ({}): {status}", r.component, r.detail);
        for p in &r.problems {
            println!("    {p}");
        }
        problems += r.problems.len();
    }
    if problems == 0 {
        println!("ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{problems} problem(s)");
        Ok(ExitCode::FAILURE)
    }
}
