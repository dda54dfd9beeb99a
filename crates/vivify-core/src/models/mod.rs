//! Model ports.

pub mod unet;
pub mod vae;
