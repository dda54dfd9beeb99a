//! Times MP4 encoding of a synthetic clip: `encode_bench [WIDTH HEIGHT FRAMES [QP]]`
//! (default 1280 704 16). Prints one JSON line.

use std::time::Instant;
use vivify_video::mp4::encode_mp4;
use vivify_video::{Frames, Mp4Options};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (w, h, n) = match args[..] {
        [w, h, n, ..] => (w, h, n),
        _ => (1280, 704, 16),
    };
    let qp = args
        .get(3)
        .map_or(vivify_video::DEFAULT_QUALITY, |&q| q as u8);
    let clip: Vec<Vec<u8>> = (0..n)
        .map(|t| {
            let mut f = Vec::with_capacity(w * h * 3);
            for y in 0..h {
                for x in 0..w {
                    let u = x as f32 / w as f32;
                    let v = y as f32 / h as f32;
                    let t = t as f32;
                    f.push((120.0 + 90.0 * (6.0 * u + 0.25 * t).sin()) as u8);
                    f.push((60.0 + 150.0 * v + 20.0 * (9.0 * u - 0.3 * t).cos()) as u8);
                    f.push((100.0 + 80.0 * (4.0 * (u + v) - 0.2 * t).sin()) as u8);
                }
            }
            f
        })
        .collect();
    let frames = Frames {
        width: w,
        height: h,
        frames: clip.iter().map(Vec::as_slice).collect(),
        fps: 16.0,
    };
    let options = Mp4Options {
        qp,
        ..Mp4Options::default()
    };
    encode_mp4(&frames, &options).expect("warm-up");
    let runs = 5;
    let mut best = f64::MAX;
    let mut total = 0.0;
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        bytes = encode_mp4(&frames, &options).expect("encode").len();
        let s = t.elapsed().as_secs_f64();
        best = best.min(s);
        total += s;
    }
    println!(
        "{{\"width\":{w},\"height\":{h},\"frames\":{n},\"qp\":{qp},\"bytes\":{bytes},\"best_s\":{best:.4},\"mean_s\":{:.4}}}",
        total / runs as f64
    );
}
