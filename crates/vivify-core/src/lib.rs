//! vivify-core: the I2VGen-XL model, its scheduler and weight handling. No network, no printing.

pub mod config;
pub mod device;
pub mod error;
pub mod memory;
pub mod models;
pub mod nn;
pub mod pipeline;
pub mod scheduler;
pub mod weights;

pub use error::{Error, Result};
