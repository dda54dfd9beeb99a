//! The generation loop, stage by stage.

pub mod denoise;
