//! The generation pipeline, stage by stage.

pub mod check;
pub mod components;
pub mod denoise;
pub mod generate;
pub mod models;
pub mod pillow_resize;
pub mod plan;
pub mod preprocess;
pub mod recovery;
pub mod request;
pub mod store;
