//! Building blocks of the UNet, named and shaped like diffusers' modules so that their state-dict
//! names line up.

pub mod attention;
pub mod compute;
pub mod conv;
pub mod conv_algorithms;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod embeddings;
pub mod feed_forward;
pub mod linear;
pub mod norm;
pub mod ops;
pub mod pool;
pub mod profile;
pub mod resample;
pub mod resnet;
pub mod row_bands;
pub mod temporal_conv;
pub mod timed_choice;
pub mod transformer;

/// A convolution config with the given stride and padding (no dilation, one group).
pub(crate) fn conv_cfg(stride: usize, padding: usize) -> candle_nn::Conv2dConfig {
    candle_nn::Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    }
}
