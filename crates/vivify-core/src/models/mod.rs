//! Model ports.

pub mod tokenizer;
pub mod unet;
