//! The JSON sidecar written beside every output.

use crate::{Result, io_err};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything needed to reproduce a video. The caller fills it in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    /// Version of vivify that wrote the file.
    pub vivify_version: String,
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub parameters: Parameters,
    pub model: ModelInfo,
    /// How it ran (dtype, device, decode chunk, ...): free-form for now.
    pub plan: serde_json::Value,
    /// Seconds per pipeline stage, in order.
    pub timings: Vec<StageTiming>,
    /// The file written: format and its settings.
    pub output: OutputInfo,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub steps: usize,
    pub guidance: f64,
    /// The model's frames-per-second conditioning.
    pub fps: u32,
    /// Playback rate of the written file.
    pub playback_fps: f64,
    pub decode_chunk: usize,
    /// Initial-noise file, when one replaced the seed.
    pub latents: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// `tiny`, a directory or a hub repo id, as given.
    pub id: String,
    pub revision: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OutputInfo {
    /// `mp4`, `gif` or `png-frames`.
    pub format: String,
    pub path: String,
    /// Format settings (MP4: codec, pixel format, quality; GIF: dithering).
    pub settings: serde_json::Value,
}

impl Metadata {
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::create_parent(path)?;
        let mut text = serde_json::to_string_pretty(self).expect("metadata serializes");
        text.push('\n');
        std::fs::write(path, text).map_err(io_err(path))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        serde_json::from_str(&text)
            .map_err(|e| crate::VideoError::Invalid(format!("{}: {e}", path.display())))
    }
}
