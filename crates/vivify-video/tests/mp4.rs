//! MP4 output checked with an independent decoder (ffprobe / ffmpeg).

mod common;

use common::{ffmpeg_rgb, ffprobe, psnr, synthetic_clip};
use vivify_video::mp4::{encode_mp4, write_mp4};
use vivify_video::{Frames, Mp4Options};

fn frames_of(clip: &[Vec<u8>], width: usize, height: usize, fps: f64) -> Frames<'_> {
    Frames {
        width,
        height,
        frames: clip.iter().map(Vec::as_slice).collect(),
        fps,
    }
}

/// Writes, probes and decodes one case; returns the PSNR against the source.
fn check(width: usize, height: usize, n: usize, fps: f64, rate: &str) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    let clip = synthetic_clip(width, height, n);
    write_mp4(
        &path,
        &frames_of(&clip, width, height, fps),
        &Mp4Options::default(),
    )
    .unwrap();
    let (pw, ph) = (width + width % 2, height + height % 2);
    let p = ffprobe(&path);
    let case = format!("{width}x{height} @ {fps} fps: {p:?}");
    assert_eq!(p.codec, "h264", "{case}");
    assert_eq!(p.pix_fmt, "yuv420p", "{case}");
    assert_eq!((p.width, p.height), (pw, ph), "{case}");
    assert_eq!(p.frames, n, "{case}");
    assert_eq!(p.frame_rate, rate, "{case}");
    let want = n as f64 / fps;
    assert!((p.duration - want).abs() < 1e-3, "duration {want}: {case}");
    assert_eq!(p.color_space, "smpte170m", "{case}");
    assert_eq!(p.color_range, "tv", "{case}");

    // Fast start: moov before mdat.
    let bytes = std::fs::read(&path).unwrap();
    let moov = bytes.windows(4).position(|w| w == b"moov").unwrap();
    let mdat = bytes.windows(4).position(|w| w == b"mdat").unwrap();
    assert!(moov < mdat, "moov must precede mdat");

    // Quality: decoded frames (cropped back to the source size) vs the source.
    let rgb = ffmpeg_rgb(&path);
    assert_eq!(rgb.len(), pw * ph * 3 * n, "{case}");
    let mut decoded = Vec::with_capacity(width * height * 3 * n);
    for f in 0..n {
        for y in 0..height {
            let row = (f * ph + y) * pw * 3;
            decoded.extend_from_slice(&rgb[row..row + width * 3]);
        }
    }
    let source: Vec<u8> = clip.concat();
    let db = psnr(&source, &decoded);
    eprintln!(
        "{width}x{height} @ {fps} fps, {n} frames: {} bytes, PSNR {db:.2} dB",
        bytes.len()
    );
    assert!(db >= 35.0, "PSNR {db:.2} dB < 35 dB: {case}");
    db
}

#[test]
fn mp4_256x256_at_8fps() {
    check(256, 256, 8, 8.0, "8/1");
}

#[test]
fn mp4_512x320_at_12_5fps() {
    check(512, 320, 10, 12.5, "25/2");
}

#[test]
fn mp4_1280x704_at_16fps() {
    check(1280, 704, 16, 16.0, "16/1");
}

#[test]
fn mp4_odd_255x143_at_24fps_is_padded_to_256x144() {
    check(255, 143, 12, 24.0, "24/1");
}

#[test]
fn mp4_7fps() {
    check(320, 192, 7, 7.0, "7/1");
}

#[test]
fn odd_size_padding_repeats_the_edge() {
    // A 33x17 clip whose last column and row are red: the padding must be red as well.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("odd.mp4");
    let (w, h) = (33, 17);
    let mut f = vec![40u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            if x == w - 1 || y == h - 1 {
                f[(y * w + x) * 3..][..3].copy_from_slice(&[220, 30, 30]);
            }
        }
    }
    let clip = vec![f; 2];
    write_mp4(&path, &frames_of(&clip, w, h, 8.0), &Mp4Options::default()).unwrap();
    let rgb = ffmpeg_rgb(&path);
    let (pw, ph) = (34, 18);
    assert_eq!(rgb.len(), pw * ph * 3 * 2);
    let px = |x: usize, y: usize| &rgb[(y * pw + x) * 3..][..3];
    for p in [px(pw - 1, 5), px(5, ph - 1), px(pw - 1, ph - 1)] {
        assert!(
            p[0] > 180 && p[1] < 80 && p[2] < 80,
            "padding {p:?} is not red"
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let f = vec![0u8; 10];
    let frames = Frames {
        width: 4,
        height: 4,
        frames: vec![&f],
        fps: 8.0,
    };
    assert!(encode_mp4(&frames, &Mp4Options::default()).is_err());
    let ok = vec![0u8; 48];
    let bad_qp = Mp4Options {
        qp: 60,
        ..Mp4Options::default()
    };
    let frames = Frames {
        frames: vec![&ok],
        ..frames
    };
    assert!(encode_mp4(&frames, &bad_qp).is_err());
}
