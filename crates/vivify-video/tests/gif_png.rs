//! GIF and PNG-frame output, checked with ffprobe and by reading the files back.

mod common;

use common::{ffprobe, psnr, synthetic_clip};
use vivify_video::metadata::OutputInfo;
use vivify_video::{Frames, Metadata, OutputOptions, sidecar_path, write_output};

fn frames_of(clip: &[Vec<u8>], width: usize, height: usize, fps: f64) -> Frames<'_> {
    Frames {
        width,
        height,
        frames: clip.iter().map(Vec::as_slice).collect(),
        fps,
    }
}

#[test]
fn gif_plays_at_the_right_rate_and_loops() {
    for (dither, fps) in [(false, 12.5), (true, 24.0)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.gif");
        let clip = synthetic_clip(97, 61, 12);
        let options = OutputOptions {
            gif_dither: dither,
            ..OutputOptions::default()
        };
        write_output(&path, &frames_of(&clip, 97, 61, fps), &options, None).unwrap();
        let p = ffprobe(&path);
        assert_eq!(p.codec, "gif", "{p:?}");
        assert_eq!((p.width, p.height, p.frames), (97, 61, 12), "{p:?}");
        let want = 12.0 / fps;
        assert!((p.duration - want).abs() <= 0.011, "duration {want}: {p:?}");
        // NETSCAPE2.0 loop extension with count 0 (forever).
        let bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(11)
            .position(|w| w == b"NETSCAPE2.0")
            .expect("loop extension");
        assert_eq!(&bytes[at + 11..at + 15], &[3, 1, 0, 0]);
        // Colours survive quantisation.
        let mut dec = gif::DecodeOptions::new();
        dec.set_color_output(gif::ColorOutput::RGBA);
        let mut dec = dec.read_info(std::fs::File::open(&path).unwrap()).unwrap();
        let frame = dec.read_next_frame().unwrap().unwrap();
        let rgb: Vec<u8> = frame
            .buffer
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        let db = psnr(&clip[0], &rgb);
        eprintln!("gif dither={dither}: first frame PSNR {db:.2} dB");
        // Dithering trades PSNR for smoother-looking gradients.
        let floor = if dither { 20.0 } else { 25.0 };
        assert!(db > floor, "GIF PSNR {db:.2}");
    }
}

#[test]
fn png_frames_and_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("frames");
    let clip = synthetic_clip(31, 9, 3);
    let meta = Metadata {
        vivify_version: "test".into(),
        prompt: "a red balloon".into(),
        seed: 7,
        output: OutputInfo {
            format: "png-frames".into(),
            ..OutputInfo::default()
        },
        ..Metadata::default()
    };
    let written = write_output(
        &out,
        &frames_of(&clip, 31, 9, 8.0),
        &OutputOptions::default(),
        Some(&meta),
    )
    .unwrap();
    assert_eq!(
        written.as_deref(),
        Some(out.join("metadata.json").as_path())
    );
    for (i, f) in clip.iter().enumerate() {
        let img = image::open(out.join(format!("{i:04}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (31, 9));
        assert_eq!(img.as_raw(), f);
    }
    assert_eq!(Metadata::read(&out.join("metadata.json")).unwrap(), meta);
    assert_eq!(
        sidecar_path(std::path::Path::new("a/out.mp4")),
        std::path::Path::new("a/out.mp4.json")
    );
}
