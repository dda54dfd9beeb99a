//! Video output: H.264 MP4, GIF and PNG frame directories, each with a JSON metadata sidecar.
//!
//! Frames come in as plain RGB bytes ([`Frames`]); this crate knows nothing of the model.

pub mod gif;
pub mod metadata;
pub mod mp4;
pub mod png;
mod yuv;

pub use metadata::{Metadata, ModelInfo, Parameters, StageTiming};
pub use mp4::{DEFAULT_QUALITY, Mp4Options};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("{0}")]
    Invalid(String),
    #[error("H.264 encoder: {0}")]
    Encoder(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("GIF: {0}")]
    Gif(String),
    #[error("PNG {path}: {message}")]
    Png { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, VideoError>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VideoError + '_ {
    move |source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A clip: `frames` RGB images of `width` x `height`, 3 bytes per pixel, rows top to bottom.
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    pub width: usize,
    pub height: usize,
    pub frames: Vec<&'a [u8]>,
    /// Playback rate in frames per second (e.g. 8, 12.5, 24).
    pub fps: f64,
}

impl Frames<'_> {
    pub fn validate(&self) -> Result<()> {
        if self.width == 0 || self.height == 0 {
            return Err(VideoError::Invalid(format!(
                "frame size {}x{} is empty",
                self.width, self.height
            )));
        }
        if self.frames.is_empty() {
            return Err(VideoError::Invalid("no frames".into()));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 1000.0) {
            return Err(VideoError::Invalid(format!(
                "fps {} must be above 0 and at most 1000",
                self.fps
            )));
        }
        let want = self.width * self.height * 3;
        for (i, f) in self.frames.iter().enumerate() {
            if f.len() != want {
                return Err(VideoError::Invalid(format!(
                    "frame {i} has {} bytes, {}x{} RGB needs {want}",
                    f.len(),
                    self.width,
                    self.height
                )));
            }
        }
        Ok(())
    }
}

/// What `--output` asks for, chosen by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Mp4,
    Gif,
    /// Anything without a `.mp4` / `.gif` extension: a directory of `0000.png`, `0001.png`, ...
    PngDir,
}

impl OutputKind {
    pub fn from_path(path: &Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("mp4") => Self::Mp4,
            Some("gif") => Self::Gif,
            _ => Self::PngDir,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mp4 => "mp4",
            Self::Gif => "gif",
            Self::PngDir => "png-frames",
        }
    }
}

/// Where the metadata of `output` goes: `out.mp4` -> `out.mp4.json`, `out.gif` -> `out.gif.json`,
/// a frame directory `DIR` -> `DIR/metadata.json`.
pub fn sidecar_path(output: &Path) -> PathBuf {
    match OutputKind::from_path(output) {
        OutputKind::PngDir => output.join("metadata.json"),
        _ => {
            let mut name = output.as_os_str().to_owned();
            name.push(".json");
            PathBuf::from(name)
        }
    }
}

/// Options for [`write_output`].
#[derive(Clone, Debug, Default)]
pub struct OutputOptions {
    pub mp4: Mp4Options,
    /// Floyd-Steinberg dithering for GIF.
    pub gif_dither: bool,
}

/// Writes `frames` to `output` (kind by extension) and, when given, the metadata sidecar.
/// Returns the sidecar's path when one was written.
pub fn write_output(
    output: &Path,
    frames: &Frames,
    options: &OutputOptions,
    metadata: Option<&Metadata>,
) -> Result<Option<PathBuf>> {
    match OutputKind::from_path(output) {
        OutputKind::Mp4 => mp4::write_mp4(output, frames, &options.mp4)?,
        OutputKind::Gif => gif::write_gif(output, frames, options.gif_dither)?,
        OutputKind::PngDir => png::write_png_frames(output, frames)?,
    }
    match metadata {
        Some(m) => {
            let path = sidecar_path(output);
            m.write(&path)?;
            Ok(Some(path))
        }
        None => Ok(None),
    }
}

pub(crate) fn create_parent(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    Ok(())
}
