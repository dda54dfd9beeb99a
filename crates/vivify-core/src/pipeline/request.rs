//! What a user asks for, validated once at the edge with errors that name the field and limit.

use super::pillow_resize::Rgb8;
use super::plan::ExecutionPlan;
use crate::{Error, Result};
use candle_core::Tensor;

/// I2VGen-XL's defaults, as diffusers' `I2VGenXLPipeline.__call__` has them.
pub const DEFAULT_WIDTH: usize = 1280;
pub const DEFAULT_HEIGHT: usize = 704;
pub const DEFAULT_FRAMES: usize = 16;
pub const DEFAULT_STEPS: usize = 50;
pub const DEFAULT_GUIDANCE: f64 = 9.0;
pub const DEFAULT_FPS: u32 = 16;
/// Frames per VAE decode call (diffusers' `decode_chunk_size` default).
pub const DEFAULT_DECODE_CHUNK: usize = 1;

/// Limits of each parameter (inclusive).
pub const SIZE_RANGE: (usize, usize) = (16, 4096);
pub const FRAMES_RANGE: (usize, usize) = (2, 128);
pub const STEPS_RANGE: (usize, usize) = (1, 1000);
pub const GUIDANCE_RANGE: (f64, f64) = (0.0, 50.0);
pub const FPS_RANGE: (u32, u32) = (1, 120);

#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// The conditioning image, upright RGB.
    pub image: Rgb8,
    pub prompt: String,
    /// Empty when not given (diffusers' None), which is what guidance pushes away from.
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub steps: usize,
    /// Classifier-free guidance scale; at most 1 turns guidance off.
    pub guidance: f64,
    /// The model's frames-per-second conditioning.
    pub fps: u32,
    /// Seed of the initial noise when `latents` is not given.
    pub seed: u64,
    /// Initial noise (1, 4, frames, height/8, width/8), like diffusers' `latents=`.
    pub latents: Option<Tensor>,
    pub decode_chunk: usize,
    /// How to run it (memory-bounding choices); the default runs everything at once.
    pub plan: ExecutionPlan,
}

fn out_of_range(field: &'static str, message: String) -> Error {
    Error::InvalidArgument { field, message }
}

impl GenerationRequest {
    /// A request with I2VGen-XL's defaults for everything but the image and prompt.
    pub fn new(image: Rgb8, prompt: impl Into<String>) -> Self {
        Self {
            image,
            prompt: prompt.into(),
            negative_prompt: String::new(),
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            frames: DEFAULT_FRAMES,
            steps: DEFAULT_STEPS,
            guidance: DEFAULT_GUIDANCE,
            fps: DEFAULT_FPS,
            seed: 0,
            latents: None,
            decode_chunk: DEFAULT_DECODE_CHUNK,
            plan: ExecutionPlan::default(),
        }
    }

    /// Latent grid (frames, height/8, width/8).
    pub fn latent_shape(&self) -> (usize, usize, usize, usize, usize) {
        (1, 4, self.frames, self.height / 8, self.width / 8)
    }

    pub fn validate(&self) -> Result<()> {
        for (field, v) in [("width", self.width), ("height", self.height)] {
            if v < SIZE_RANGE.0 || v > SIZE_RANGE.1 || v % 8 != 0 {
                return Err(out_of_range(
                    field,
                    format!(
                        "{v}: must be a multiple of 8 from {} to {}",
                        SIZE_RANGE.0, SIZE_RANGE.1
                    ),
                ));
            }
        }
        let ranges = [
            ("frames", self.frames, FRAMES_RANGE),
            ("steps", self.steps, STEPS_RANGE),
        ];
        for (field, v, (lo, hi)) in ranges {
            if v < lo || v > hi {
                return Err(out_of_range(
                    field,
                    format!("{v}: must be from {lo} to {hi}"),
                ));
            }
        }
        if !(self.guidance.is_finite()
            && self.guidance >= GUIDANCE_RANGE.0
            && self.guidance <= GUIDANCE_RANGE.1)
        {
            return Err(out_of_range(
                "guidance",
                format!(
                    "{}: must be from {} to {}",
                    self.guidance, GUIDANCE_RANGE.0, GUIDANCE_RANGE.1
                ),
            ));
        }
        if self.fps < FPS_RANGE.0 || self.fps > FPS_RANGE.1 {
            return Err(out_of_range(
                "fps",
                format!(
                    "{}: must be from {} to {}",
                    self.fps, FPS_RANGE.0, FPS_RANGE.1
                ),
            ));
        }
        if self.decode_chunk == 0 {
            return Err(out_of_range("decode_chunk", "must be at least 1".into()));
        }
        if self.image.width == 0 || self.image.height == 0 {
            return Err(out_of_range("image", "the image is empty".into()));
        }
        if let Some(latents) = &self.latents {
            let (b, c, f, h, w) = self.latent_shape();
            if latents.dims() != [b, c, f, h, w] {
                return Err(out_of_range(
                    "latents",
                    format!(
                        "shape {:?}, expected {:?} (1, 4, frames, height/8, width/8)",
                        latents.dims(),
                        [b, c, f, h, w]
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerationRequest {
        GenerationRequest::new(Rgb8::new(2, 2, vec![0; 12]), "a cat")
    }

    #[test]
    fn defaults_are_i2vgen_xl_and_valid() {
        let r = request();
        assert_eq!(
            (r.width, r.height, r.frames, r.steps, r.guidance, r.fps),
            (1280, 704, 16, 50, 9.0, 16)
        );
        assert!(r.validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        type Mutation = fn(&mut GenerationRequest);
        let cases: [(&str, Mutation); 8] = [
            ("`width`", |r| r.width = 100),
            ("`height`", |r| r.height = 8),
            ("`frames`", |r| r.frames = 1),
            ("`steps`", |r| r.steps = 0),
            ("`guidance`", |r| r.guidance = -1.0),
            ("`guidance`", |r| r.guidance = f64::NAN),
            ("`fps`", |r| r.fps = 0),
            ("`decode_chunk`", |r| r.decode_chunk = 0),
        ];
        for (field, mutate) in cases {
            let mut r = request();
            mutate(&mut r);
            let err = r.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }
}
