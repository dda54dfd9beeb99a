//! `vivify download`: fetch a hub model into the Hugging Face cache ahead of time.

use crate::args::DownloadArgs;
use crate::model::{ModelSource, resolve_model};
use anyhow::{Result, bail};
use std::process::ExitCode;

pub fn run(args: &DownloadArgs) -> Result<ExitCode> {
    match resolve_model(&args.model)? {
        ModelSource::Dir(dir) => println!("{}", dir.display()),
        ModelSource::Tiny => bail!("--model tiny is built in: nothing to download"),
    }
    Ok(ExitCode::SUCCESS)
}
