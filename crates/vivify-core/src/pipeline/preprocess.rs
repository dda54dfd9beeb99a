//! The conditioning image, prepared exactly as diffusers' I2VGenXLPipeline prepares it.
//!
//! Decoding accepts JPEG, PNG and WebP, applies the EXIF orientation (phone photos are stored
//! sideways with a rotation tag; users expect them upright) and drops any alpha channel, as
//! Pillow's `convert("RGB")` does.

use super::pillow_resize::{Filter, Rgb8, resize};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use image::ImageDecoder;
use std::path::Path;

/// CLIP's input normalisation (the published feature_extractor's image_mean / image_std).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];
/// Side of the CLIP image encoder's input.
pub const CLIP_SIZE: usize = 224;

fn invalid_image(message: String) -> Error {
    Error::InvalidArgument {
        field: "image",
        message,
    }
}

/// Decodes an image file's bytes to upright RGB.
pub fn decode_image(bytes: &[u8]) -> Result<Rgb8> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| invalid_image(format!("unreadable: {e}")))?;
    let format = reader
        .format()
        .ok_or_else(|| invalid_image("not a JPEG, PNG or WebP image".into()))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| invalid_image(format!("cannot decode {format:?}: {e}")))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = image::DynamicImage::from_decoder(decoder)
        .map_err(|e| invalid_image(format!("corrupt {format:?} data: {e}")))?;
    img.apply_orientation(orientation);
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    Ok(Rgb8::new(w as usize, h as usize, rgb.into_raw()))
}

pub fn load_image(path: &Path) -> Result<Rgb8> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_image(&bytes)
}

/// Python's `a // b` for floats (CPython's float floor division, which is not always
/// `floor(a / b)`).
fn py_floor_div(a: f64, b: f64) -> f64 {
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && ((b < 0.0) != (m < 0.0)) {
        div -= 1.0;
    }
    let floor = div.floor();
    if div - floor > 0.5 {
        floor + 1.0
    } else {
        floor
    }
}

/// diffusers' `_center_crop_wide`: scale so the image covers `width` x `height` (BOX filter),
/// then crop the centre.
pub fn center_crop_wide(img: &Rgb8, width: usize, height: usize) -> Rgb8 {
    let scale = (img.width as f64 / width as f64).min(img.height as f64 / height as f64);
    let new_w = py_floor_div(img.width as f64, scale).round() as usize;
    let new_h = py_floor_div(img.height as f64, scale).round() as usize;
    let resized = resize(img, new_w, new_h, Filter::Box);
    let x1 = (new_w as i64 - width as i64).div_euclid(2);
    let y1 = (new_h as i64 - height as i64).div_euclid(2);
    resized.crop(x1, y1, width, height)
}

/// (1, 3, H, W) f32 tensor of `img` mapped by `f(value / 255, channel)`.
fn to_tensor(img: &Rgb8, device: &Device, f: impl Fn(f32, usize) -> f32) -> Result<Tensor> {
    let plane = img.width * img.height;
    let mut data = vec![0f32; 3 * plane];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            data[c * plane + i] = f(px[c] as f32 / 255.0, c);
        }
    }
    Ok(Tensor::from_vec(
        data,
        (1, 3, img.height, img.width),
        device,
    )?)
}

/// The image encoder's input: centre-crop to a `width`-sided square, BILINEAR to 224x224,
/// CLIP-normalised. (1, 3, 224, 224).
pub fn clip_pixel_values(img: &Rgb8, width: usize, device: &Device) -> Result<Tensor> {
    let square = center_crop_wide(img, width, width);
    let small = resize(&square, CLIP_SIZE, CLIP_SIZE, Filter::Bilinear);
    to_tensor(&small, device, |v, c| (v - CLIP_MEAN[c]) / CLIP_STD[c])
}

/// The VAE's input: centre-crop to `width` x `height`, scaled to [-1, 1]. (1, 3, H, W).
pub fn vae_pixel_values(
    img: &Rgb8,
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor> {
    let cropped = center_crop_wide(img, width, height);
    to_tensor(&cropped, device, |v, _| 2.0 * v - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_floor_division() {
        assert_eq!(py_floor_div(1000.0, 0.78125), 1280.0);
        assert_eq!(py_floor_div(7.0, 2.0), 3.0);
        // 1 // 0.1 is 9.0 in Python (0.1 is slightly above one tenth), not floor(1 / 0.1) = 10.
        assert_eq!(py_floor_div(1.0, 0.1), 9.0);
    }

    #[test]
    fn garbage_is_a_clear_image_error() {
        let err = decode_image(b"not an image at all")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`image`"), "{err}");
    }
}
