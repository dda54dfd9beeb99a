//! Shared test helpers: a synthetic clip, ffprobe/ffmpeg wrappers, PSNR.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

#[path = "../tools/mod.rs"]
mod tools;
pub use tools::require;

/// A natural-looking clip: drifting colour gradients, a soft moving disc and a sliding bar.
pub fn synthetic_clip(width: usize, height: usize, frames: usize) -> Vec<Vec<u8>> {
    (0..frames)
        .map(|t| {
            let t = t as f32;
            let mut f = Vec::with_capacity(width * height * 3);
            let (cx, cy) = (
                width as f32 * (0.3 + 0.02 * t),
                height as f32 * (0.5 + 0.1 * (t * 0.4).sin()),
            );
            let radius = width.min(height) as f32 * 0.18;
            for y in 0..height {
                for x in 0..width {
                    let (xf, yf) = (x as f32, y as f32);
                    let u = xf / width as f32;
                    let v = yf / height as f32;
                    let mut r = 120.0 + 90.0 * (6.0 * u + 0.25 * t).sin() * (1.0 - 0.5 * v);
                    let mut g = 60.0 + 150.0 * v + 20.0 * (9.0 * u - 0.3 * t).cos();
                    let mut b = 100.0 + 80.0 * ((4.0 * (u + v)) - 0.2 * t).sin();
                    // Soft-edged disc.
                    let d = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt();
                    let a = ((radius - d) / 2.0).clamp(0.0, 1.0);
                    r = r * (1.0 - a) + 240.0 * a;
                    g = g * (1.0 - a) + 200.0 * a;
                    b = b * (1.0 - a) + 40.0 * a;
                    // Sliding dark bar.
                    let bx = (width as f32 * 0.1 + 6.0 * t) as usize;
                    if x >= bx && x < bx + width / 12 && y > height / 4 && y < height * 3 / 4 {
                        r *= 0.3;
                        g *= 0.3;
                        b *= 0.4;
                    }
                    f.extend([r, g, b].map(|c| c.round().clamp(0.0, 255.0) as u8));
                }
            }
            f
        })
        .collect()
}

#[derive(Debug)]
pub struct Probe {
    pub codec: String,
    pub pix_fmt: String,
    pub width: usize,
    pub height: usize,
    pub frame_rate: String,
    pub frames: usize,
    pub duration: f64,
    pub color_space: String,
    pub color_range: String,
    pub json: serde_json::Value,
}

pub fn ffprobe(path: &Path) -> Probe {
    let bin = require("ffprobe");
    let out = Command::new(bin)
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args([
            "-show_entries",
            "stream:format=duration,format_name",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("running ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    let s = &json["streams"][0];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let num = |v: &serde_json::Value| -> f64 {
        v.as_str()
            .and_then(|t| t.parse().ok())
            .or(v.as_f64())
            .unwrap_or(f64::NAN)
    };
    Probe {
        codec: text(&s["codec_name"]),
        pix_fmt: text(&s["pix_fmt"]),
        width: s["width"].as_u64().unwrap_or(0) as usize,
        height: s["height"].as_u64().unwrap_or(0) as usize,
        frame_rate: text(&s["r_frame_rate"]),
        frames: num(&s["nb_read_frames"]) as usize,
        duration: num(&json["format"]["duration"]),
        color_space: text(&s["color_space"]),
        color_range: text(&s["color_range"]),
        json,
    }
}

/// Decodes every frame to RGB24 with ffmpeg at the stored (padded) size.
pub fn ffmpeg_rgb(path: &Path) -> Vec<u8> {
    let bin = require("ffmpeg");
    let out = Command::new(bin)
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("running ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// PSNR in dB over all channels of `a` vs `b`.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let se: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let mse = se / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
}
