//! Animated GIF: a 256-colour palette per frame (NeuQuant), optional Floyd-Steinberg dithering,
//! loops forever. Frame delays are in centiseconds; they are rounded cumulatively so the total
//! length matches the fps (24 fps -> 4, 4, 5, 4, 4, 4, ... cs).

use crate::{Frames, Result, VideoError, io_err};
use color_quant::NeuQuant;
use std::path::Path;

/// NeuQuant sampling factor: 1 best, 30 fastest.
const QUANT_SAMPLE: i32 = 10;

pub fn write_gif(path: &Path, frames: &Frames, dither: bool) -> Result<()> {
    frames.validate()?;
    if frames.width > u16::MAX as usize || frames.height > u16::MAX as usize {
        return Err(VideoError::Invalid(format!(
            "GIF is limited to 65535x65535, got {}x{}",
            frames.width, frames.height
        )));
    }
    crate::create_parent(path)?;
    let file = std::fs::File::create(path).map_err(io_err(path))?;
    let gif_err = |e: gif::EncodingError| VideoError::Gif(e.to_string());
    let (w, h) = (frames.width as u16, frames.height as u16);
    let mut enc = gif::Encoder::new(std::io::BufWriter::new(file), w, h, &[]).map_err(gif_err)?;
    enc.set_repeat(gif::Repeat::Infinite).map_err(gif_err)?;
    let centis = |i: usize| (i as f64 * 100.0 / frames.fps).round() as u64;
    for (i, rgb) in frames.frames.iter().enumerate() {
        let (palette, indices) = quantize(rgb, frames.width, dither);
        let mut frame = gif::Frame::from_palette_pixels(w, h, indices, palette, None);
        frame.delay = (centis(i + 1) - centis(i)).clamp(1, u16::MAX as u64) as u16;
        enc.write_frame(&frame).map_err(gif_err)?;
    }
    enc.into_inner()
        .map_err(|e| VideoError::Gif(e.to_string()))?
        .into_inner()
        .map_err(|e| VideoError::Gif(e.to_string()))?;
    Ok(())
}

/// A 256-colour palette for `rgb` and each pixel's index into it.
fn quantize(rgb: &[u8], width: usize, dither: bool) -> (Vec<u8>, Vec<u8>) {
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .flat_map(|p| [p[0], p[1], p[2], 255])
        .collect();
    let nq = NeuQuant::new(QUANT_SAMPLE, 256, &rgba);
    let palette = nq.color_map_rgb();
    let n = rgb.len() / 3;
    if !dither {
        let indices = rgba.chunks_exact(4).map(|p| nq.index_of(p) as u8).collect();
        return (palette, indices);
    }
    // Floyd-Steinberg: carry each pixel's error to its right and lower neighbours.
    let mut err = vec![[0f32; 3]; n];
    let mut indices = Vec::with_capacity(n);
    let height = n / width;
    for y in 0..height {
        for x in 0..width {
            let i = y * width + x;
            let mut want = [0f32; 3];
            let mut px = [0u8, 0, 0, 255];
            for c in 0..3 {
                want[c] = rgb[i * 3 + c] as f32 + err[i][c];
                px[c] = want[c].round().clamp(0.0, 255.0) as u8;
            }
            let idx = nq.index_of(&px);
            indices.push(idx as u8);
            for c in 0..3 {
                let e = want[c] - palette[idx * 3 + c] as f32;
                let mut spread = |j: usize, wgt: f32| err[j][c] += e * wgt;
                if x + 1 < width {
                    spread(i + 1, 7.0 / 16.0);
                }
                if y + 1 < height {
                    if x > 0 {
                        spread(i + width - 1, 3.0 / 16.0);
                    }
                    spread(i + width, 5.0 / 16.0);
                    if x + 1 < width {
                        spread(i + width + 1, 1.0 / 16.0);
                    }
                }
            }
        }
    }
    (palette, indices)
}
