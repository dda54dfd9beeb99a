//! Model ports.

pub mod clip;
pub mod unet;
