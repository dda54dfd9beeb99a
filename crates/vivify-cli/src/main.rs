//! The `vivify` command line.

mod args;
mod auto_plan;
mod commands;
mod device_facts;
mod model;
mod plan_overrides;
mod progress;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = args::Cli::parse();
    let result = match cli.command {
        args::Command::CheckModel(a) => commands::check_model::run(&a),
        args::Command::Generate(a) => commands::generate::run(&a),
        args::Command::Download(a) => commands::download::run(&a),
        args::Command::Plan(a) => commands::plan::run(&a),
        args::Command::Doctor(a) => commands::doctor::run(&a),
        args::Command::Serve(a) => commands::serve::run(&a),
        args::Command::BenchUnet(a) => commands::bench_unet::run(&a),
        args::Command::BenchOps(a) => commands::bench_ops::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
