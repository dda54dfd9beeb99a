//! diffusers configuration files: `model_index.json` and each component's `config.json`.
//!
//! Unknown fields are ignored and missing ones take the defaults of diffusers' constructors, so a
//! config written by any diffusers version parses.

mod model_index;
mod unet;

pub use model_index::{ComponentRef, ModelIndex};
pub use unet::{DownBlockType, TRANSFORMER_IN_HEADS, UNetConfig, UpBlockType};

use crate::{Error, Result};
use std::path::Path;

/// Reads, parses and checks a config file with `validate`, naming the file in any error.
pub fn read_validated<T: serde::de::DeserializeOwned>(
    path: &Path,
    validate: impl Fn(&T) -> std::result::Result<(), String>,
) -> Result<T> {
    let config: T = read_json(path)?;
    validate(&config).map_err(|message| Error::Config {
        path: path.display().to_string(),
        message,
    })?;
    Ok(config)
}

/// Reads and parses one JSON config file, naming the file in any error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Config {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}
