//! A directory of PNG frames: `DIR/0000.png`, `DIR/0001.png`, ...

use crate::{Frames, Result, VideoError, io_err};
use std::path::Path;

pub fn write_png_frames(dir: &Path, frames: &Frames) -> Result<()> {
    frames.validate()?;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for (i, data) in frames.frames.iter().enumerate() {
        let path = dir.join(format!("{i:04}.png"));
        image::save_buffer(
            &path,
            data,
            frames.width as u32,
            frames.height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| VideoError::Png {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}
