//! The generation loop, stage by stage.

pub mod denoise;
pub mod pillow_resize;
pub mod preprocess;
