//! Model ports.

pub mod clip;
pub mod unet;
pub mod vae;
