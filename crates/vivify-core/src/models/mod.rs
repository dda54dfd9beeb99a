//! Model ports.

pub mod unet;
