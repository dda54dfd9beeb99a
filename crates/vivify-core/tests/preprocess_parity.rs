//! Image preparation against Pillow + diffusers (tools/parity/image_fixtures.py): the centre
//! crop with BOX resize, the BILINEAR resize to CLIP's 224x224, EXIF orientation and alpha.

mod common;

use candle_core::Device;
use common::fixtures_dir;
use vivify_core::pipeline::pillow_resize::{Filter, Rgb8, resize};
use vivify_core::pipeline::preprocess::{
    CLIP_MEAN, CLIP_SIZE, CLIP_STD, center_crop_wide, clip_pixel_values, load_image,
    vae_pixel_values,
};

#[derive(serde::Deserialize)]
struct Case {
    source: String,
    width: usize,
    height: usize,
    crop: String,
    clip: String,
}

fn image(name: &str) -> Rgb8 {
    load_image(&fixtures_dir().join("image").join(name)).unwrap()
}

/// Largest per-channel difference, in 1/255 steps.
fn max_diff(a: &Rgb8, b: &Rgb8) -> u8 {
    assert_eq!((a.width, a.height), (b.width, b.height), "size");
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn cases() -> Vec<Case> {
    serde_json::from_str(&std::fs::read_to_string(fixtures_dir().join("image/cases.json")).unwrap())
        .unwrap()
}

#[test]
fn center_crop_and_clip_resize_match_pillow() {
    for case in cases() {
        let src = image(&case.source);
        let crop = center_crop_wide(&src, case.width, case.height);
        let d = max_diff(&crop, &image(&case.crop));
        println!(
            "{} -> {}x{}: crop max diff {d}",
            case.source, case.width, case.height
        );
        assert!(d <= 1, "{}: crop differs by {d}/255", case.crop);

        let square = center_crop_wide(&src, case.width, case.width);
        let clip = resize(&square, CLIP_SIZE, CLIP_SIZE, Filter::Bilinear);
        let d = max_diff(&clip, &image(&case.clip));
        println!("{} -> clip via {}: max diff {d}", case.source, case.width);
        assert!(d <= 1, "{}: clip input differs by {d}/255", case.clip);
    }
}

#[test]
fn tensors_are_scaled_and_normalised() {
    let case = &cases()[0];
    let src = image(&case.source);
    let expected_crop = image(&case.crop);
    let vae = vae_pixel_values(&src, case.width, case.height, &Device::Cpu).unwrap();
    assert_eq!(vae.dims(), &[1, 3, case.height, case.width]);
    let v: Vec<f32> = vae.flatten_all().unwrap().to_vec1().unwrap();
    // Channel 1 of pixel 0: 2·p/255 − 1.
    let plane = case.width * case.height;
    assert!((v[plane] - (2.0 * expected_crop.data[1] as f32 / 255.0 - 1.0)).abs() < 1e-6);

    let clip = clip_pixel_values(&src, case.width, &Device::Cpu).unwrap();
    assert_eq!(clip.dims(), &[1, 3, 224, 224]);
    let expected = image(&case.clip);
    let c: Vec<f32> = clip.flatten_all().unwrap().to_vec1().unwrap();
    let want = (expected.data[2] as f32 / 255.0 - CLIP_MEAN[2]) / CLIP_STD[2];
    assert!((c[2 * 224 * 224] - want).abs() < 1e-5);
}

#[test]
fn exif_orientation_is_applied() {
    let shown = image("rotated.jpg");
    let upright = image("upright.png");
    assert_eq!(
        (shown.width, shown.height),
        (40, 24),
        "stored 24x40 sideways, shown 40x24"
    );
    // Different JPEG decoders round the IDCT differently: compare on average.
    let mean: f64 = shown
        .data
        .iter()
        .zip(&upright.data)
        .map(|(a, b)| a.abs_diff(*b) as f64)
        .sum::<f64>()
        / shown.data.len() as f64;
    assert!(mean < 2.0, "mean difference {mean}");
}

#[test]
fn alpha_is_dropped_for_png_and_webp() {
    let expected = image("rgba_as_rgb.png");
    assert_eq!(max_diff(&image("rgba.png"), &expected), 0);
    assert_eq!(max_diff(&image("rgba.webp"), &expected), 0);
}
