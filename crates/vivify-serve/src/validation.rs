//! Everything a client sends is checked here, before it is stored: the upload (size, format,
//! dimensions, decodability) and the job parameters (known keys, types, ranges). Errors name the
//! field and the limit so the page and API clients can show them as they are.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest accepted upload.
pub const MAX_UPLOAD_BYTES: usize = 20 << 20;
/// Largest accepted image side, in pixels (checked from the header, before decoding).
pub const MAX_IMAGE_SIDE: u32 = 8192;
/// Prompt length cap in bytes (the model reads at most 77 tokens anyway).
pub const MAX_PROMPT_BYTES: usize = 4000;

/// A 400 answer: which field, what was wrong, and the limit it broke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvalidField {
    pub field: String,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl InvalidField {
    pub fn new(field: &str, error: impl Into<String>, limit: Option<String>) -> Self {
        let error = format!("`{field}`: {}", error.into());
        Self {
            field: field.to_string(),
            error,
            limit,
        }
    }
}

/// The ranges a server accepts (inclusive). `standard` is what the web page offers; `dev` lowers
/// the frame and step minimums so tests and smoke checks can run tiny jobs in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Limits {
    pub name: &'static str,
    pub size: (usize, usize),
    pub frames: (usize, usize),
    pub steps: (usize, usize),
    pub guidance: (f64, f64),
    pub fps: (u32, u32),
}

impl Limits {
    pub const STANDARD: Limits = Limits {
        name: "standard",
        size: (64, 2048),
        frames: (8, 32),
        steps: (10, 100),
        guidance: (1.0, 20.0),
        fps: (4, 24),
    };
    pub const DEV: Limits = Limits {
        name: "dev",
        size: (16, 2048),
        frames: (2, 32),
        steps: (1, 100),
        guidance: (1.0, 20.0),
        fps: (4, 24),
    };

    pub fn by_name(name: &str) -> Option<Limits> {
        match name {
            "standard" => Some(Self::STANDARD),
            "dev" => Some(Self::DEV),
            _ => None,
        }
    }
}

/// A job's parameters after validation, with every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub steps: usize,
    pub guidance: f64,
    pub fps: u32,
    pub seed: u64,
}

pub const PARAM_KEYS: [&str; 9] = [
    "prompt",
    "negative_prompt",
    "width",
    "height",
    "frames",
    "steps",
    "guidance",
    "fps",
    "seed",
];

/// Largest seed: 2^53 - 1, so JavaScript numbers carry it exactly.
pub const MAX_SEED: u64 = (1 << 53) - 1;

fn integer(map: &Map<String, Value>, key: &str) -> Result<Option<u64>, InvalidField> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| InvalidField::new(key, format!("{v} is not a whole number"), None)),
    }
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    key: &str,
    v: T,
    (lo, hi): (T, T),
) -> Result<T, InvalidField> {
    if v < lo || v > hi {
        return Err(InvalidField::new(
            key,
            format!("{v} is out of range (from {lo} to {hi})"),
            Some(format!("{lo} to {hi}")),
        ));
    }
    Ok(v)
}

/// The default video size for an image: the image's aspect with the shorter side 512 (or the
/// limits' nearest), both sides multiples of 8.
pub fn default_size(image: (u32, u32), limits: &Limits) -> (usize, usize) {
    let (w, h) = (image.0.max(1) as f64, image.1.max(1) as f64);
    let scale = 512.0 / w.min(h);
    let fit = |x: f64| {
        let v = ((x * scale / 8.0).round() as usize * 8).max(8);
        v.clamp(limits.size.0, limits.size.1 / 8 * 8)
    };
    (fit(w), fit(h))
}

/// Parses the `params` JSON object of `POST /api/jobs`. `image` is the upload's size in pixels
/// (for the default video size); `seed` is used when the client gives none.
pub fn parse_params(
    text: &str,
    limits: &Limits,
    image: (u32, u32),
    random_seed: u64,
) -> Result<JobParams, InvalidField> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| InvalidField::new("params", format!("not valid JSON: {e}"), None))?;
    let Value::Object(map) = value else {
        return Err(InvalidField::new("params", "must be a JSON object", None));
    };
    if let Some(unknown) = map.keys().find(|k| !PARAM_KEYS.contains(&k.as_str())) {
        return Err(InvalidField::new(
            unknown,
            format!("unknown field (known: {})", PARAM_KEYS.join(", ")),
            None,
        ));
    }
    let text_field = |key: &str, required: bool| -> Result<String, InvalidField> {
        match map.get(key) {
            Some(Value::String(s)) if s.len() > MAX_PROMPT_BYTES => Err(InvalidField::new(
                key,
                format!("{} bytes is too long", s.len()),
                Some(format!("{MAX_PROMPT_BYTES} bytes")),
            )),
            Some(Value::String(s)) if required && s.trim().is_empty() => {
                Err(InvalidField::new(key, "must not be empty", None))
            }
            Some(Value::String(s)) => Ok(s.clone()),
            None | Some(Value::Null) if !required => Ok(String::new()),
            None | Some(Value::Null) => Err(InvalidField::new(key, "is required", None)),
            Some(v) => Err(InvalidField::new(key, format!("{v} is not a string"), None)),
        }
    };
    let prompt = text_field("prompt", true)?;
    let negative_prompt = text_field("negative_prompt", false)?;
    let size = |key: &str| -> Result<Option<usize>, InvalidField> {
        let Some(v) = integer(&map, key)? else {
            return Ok(None);
        };
        let (lo, hi) = limits.size;
        if v % 8 != 0 || v < lo as u64 || v > hi as u64 {
            return Err(InvalidField::new(
                key,
                format!("{v} must be a multiple of 8 from {lo} to {hi}"),
                Some(format!("multiple of 8, {lo} to {hi}")),
            ));
        }
        Ok(Some(v as usize))
    };
    let (width, height) = match (size("width")?, size("height")?) {
        (Some(w), Some(h)) => (w, h),
        (w, h) => {
            let (dw, dh) = default_size(image, limits);
            (w.unwrap_or(dw), h.unwrap_or(dh))
        }
    };
    let count = |key: &str, default: usize, range| -> Result<usize, InvalidField> {
        match integer(&map, key)? {
            Some(v) => in_range(key, v.min(u64::from(u32::MAX)) as usize, range),
            None => Ok(default),
        }
    };
    let frames = count("frames", 16, limits.frames)?;
    let steps = count("steps", 50, limits.steps)?;
    let fps = count("fps", 16, (limits.fps.0 as usize, limits.fps.1 as usize))? as u32;
    let guidance = match map.get("guidance") {
        None | Some(Value::Null) => 9.0,
        Some(v) => {
            let g = v.as_f64().ok_or_else(|| {
                InvalidField::new("guidance", format!("{v} is not a number"), None)
            })?;
            in_range("guidance", g, limits.guidance)?
        }
    };
    let seed = match integer(&map, "seed")? {
        Some(s) => in_range("seed", s, (0, MAX_SEED))?,
        None => random_seed % (MAX_SEED + 1),
    };
    Ok(JobParams {
        prompt,
        negative_prompt,
        width,
        height,
        frames,
        steps,
        guidance,
        fps,
        seed,
    })
}

/// The formats accepted, with the extension their stored copy gets.
fn extension(format: image::ImageFormat) -> Option<&'static str> {
    match format {
        image::ImageFormat::Png => Some("png"),
        image::ImageFormat::Jpeg => Some("jpg"),
        image::ImageFormat::WebP => Some("webp"),
        _ => None,
    }
}

/// Checks an upload fully (format, header dimensions, then a decode under allocation limits) and
/// returns its size in pixels and the extension to store it under.
pub fn check_image(bytes: &[u8]) -> Result<((u32, u32), &'static str), InvalidField> {
    let limit = || Some(format!("{} MB", MAX_UPLOAD_BYTES >> 20));
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(InvalidField::new(
            "image",
            format!("{} bytes is over the upload limit", bytes.len()),
            limit(),
        ));
    }
    if bytes.is_empty() {
        return Err(InvalidField::new("image", "the file is empty", None));
    }
    let formats = Some("JPEG, PNG or WebP".to_string());
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InvalidField::new("image", format!("unreadable: {e}"), formats.clone()))?;
    let ext = reader.format().and_then(extension).ok_or_else(|| {
        InvalidField::new("image", "not a JPEG, PNG or WebP image", formats.clone())
    })?;
    let side_limit = Some(format!("{MAX_IMAGE_SIDE} px a side"));
    // The header's size first: a decompression bomb is refused before anything is allocated.
    let (w, h) = reader.into_dimensions().map_err(|e| match e {
        image::ImageError::Limits(_) => InvalidField::new(
            "image",
            format!("too large to decode: {e}"),
            side_limit.clone(),
        ),
        e => InvalidField::new("image", format!("corrupt image header: {e}"), None),
    })?;
    if w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE {
        return Err(InvalidField::new(
            "image",
            format!("{w}x{h} is larger than the limit"),
            side_limit,
        ));
    }
    if w == 0 || h == 0 {
        return Err(InvalidField::new(
            "image",
            format!("{w}x{h} is empty"),
            None,
        ));
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| InvalidField::new("image", format!("unreadable: {e}"), None))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(1 << 30);
    reader.limits(limits);
    reader.decode().map_err(|e| match e {
        image::ImageError::Limits(_) => InvalidField::new(
            "image",
            format!("too large to decode: {e}"),
            side_limit.clone(),
        ),
        e => InvalidField::new("image", format!("corrupt image data: {e}"), None),
    })?;
    Ok(((w, h), ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<JobParams, InvalidField> {
        parse_params(text, &Limits::STANDARD, (640, 480), 7)
    }

    #[test]
    fn defaults_follow_the_image() {
        let p = parse(r#"{"prompt": "a cat"}"#).unwrap();
        assert_eq!((p.width, p.height), (680, 512));
        assert_eq!(
            (p.frames, p.steps, p.guidance, p.fps, p.seed),
            (16, 50, 9.0, 16, 7)
        );
    }

    #[test]
    fn each_bad_field_is_named_with_its_limit() {
        let cases = [
            (
                r#"{"prompt": "x", "frames": 40}"#,
                "frames",
                Some("8 to 32"),
            ),
            (r#"{"prompt": "x", "steps": 5}"#, "steps", Some("10 to 100")),
            (
                r#"{"prompt": "x", "guidance": 25}"#,
                "guidance",
                Some("1 to 20"),
            ),
            (r#"{"prompt": "x", "fps": 30}"#, "fps", Some("4 to 24")),
            (
                r#"{"prompt": "x", "width": 100}"#,
                "width",
                Some("multiple of 8, 64 to 2048"),
            ),
            (
                r#"{"prompt": "x", "height": 4096}"#,
                "height",
                Some("multiple of 8, 64 to 2048"),
            ),
            (r#"{"prompt": "x", "colour": 1}"#, "colour", None),
            (r#"{"prompt": ""}"#, "prompt", None),
            (r#"{"frames": 16}"#, "prompt", None),
            (r#"{"prompt": "x", "seed": -1}"#, "seed", None),
            (r#"{"prompt": "x", "steps": "ten"}"#, "steps", None),
            (r#"[1]"#, "params", None),
        ];
        for (text, field, limit) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.field, field, "{text}: {e:?}");
            assert_eq!(e.limit.as_deref(), limit, "{text}: {e:?}");
            assert!(e.error.contains(field), "{text}: {e:?}");
        }
    }

    #[test]
    fn dev_limits_allow_tiny_jobs() {
        let p = parse_params(
            r#"{"prompt": "x", "width": 64, "height": 64, "frames": 4, "steps": 2}"#,
            &Limits::DEV,
            (64, 64),
            0,
        )
        .unwrap();
        assert_eq!((p.frames, p.steps), (4, 2));
    }

    #[test]
    fn images_are_checked() {
        assert_eq!(check_image(b"hello").unwrap_err().field, "image");
        assert_eq!(check_image(b"").unwrap_err().field, "image");
    }
}
