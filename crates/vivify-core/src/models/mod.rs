//! Model ports.

pub mod clip;
pub mod tokenizer;
pub mod unet;
pub mod vae;
