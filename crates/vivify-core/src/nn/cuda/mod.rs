//! vivify's own CUDA paths (feature `cuda`): fused attention, fused GroupNorm(+SiLU), LayerNorm
//! and GEGLU, linear layers with the bias in the GEMM's epilogue, the temporal convolution as one
//! GEMM, cuDNN convolution with tensor-core math (feature `cudnn`: through the graph API with
//! cuDNN's heuristics, else the legacy API with measured algorithm choice; for NCHW input the
//! fastest way per shape, timed), the channels-last handoff around GroupNorm, and the device
//! memory pool's counters.

#[cfg(feature = "cudnn")]
pub mod conv_path;
#[cfg(feature = "cudnn")]
pub mod cudnn_conv;
#[cfg(feature = "cudnn")]
pub mod cudnn_graph_conv;
pub mod elementwise;
pub mod flash_attention;
pub mod frame_conv;
pub mod geglu;
pub mod group_norm;
mod kernel_module;
pub mod layer_norm;
pub mod linear;
pub mod memory;

use std::sync::OnceLock;

/// The suffix of a kernel's entry point for `dtype` (`layer_norm_f16`, `geglu_bf16`, ...).
pub(crate) fn kernel_type_name(dtype: candle_core::DType) -> &'static str {
    use candle_core::DType;
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// The launch of a kernel over 32x32 tiles in blocks of (32, 8) threads (elementwise.cu's
/// transposes, group_norm.cu's channels-last apply): tiles of `x_extent` on x, `y_blocks` on y,
/// `batch` on z (the kernels stride over z, which stops at 65535 blocks).
pub(crate) fn tile_launch(
    x_extent: usize,
    y_blocks: usize,
    batch: usize,
) -> candle_core::cuda_backend::cudarc::driver::LaunchConfig {
    candle_core::cuda_backend::cudarc::driver::LaunchConfig {
        grid_dim: (
            x_extent.div_ceil(32) as u32,
            y_blocks as u32,
            batch.clamp(1, 65535) as u32,
        ),
        block_dim: (32, 8, 1),
        shared_mem_bytes: 0,
    }
}

/// Whether one of vivify's CUDA kernels or paths may run: `VIVIFY_CUDA_DISABLE=attention,group_norm,...`
/// (names: attention, attention_async, attention_ldmatrix, group_norm, layer_norm, geglu, linear,
/// elementwise, frame_conv, cudnn_conv, cudnn_graph, conv1x1_gemm, channels_last_handoff,
/// conv_weights_channels_last, conv_path_choice, conv_nchw_strides, conv1x1_cublaslt,
/// pair_tiles, wide_access, or `all`) falls back to the path before it (candle's ops; for
/// pair_tiles 32x32 tiles of single 16-bit elements in the transposes, the bias pass from
/// channels last and GroupNorm's channels-last output; for wide_access one element per access
/// (two in GEGLU's block per row) in GroupNorm, GEGLU and LayerNorm; for attention_async the
/// register-loaded tiles, for attention_ldmatrix the cp.async tiles, for cudnn_graph cuDNN's
/// legacy API, for channels_last_handoff the NCHW GroupNorm and transposes, for
/// conv_weights_channels_last NCHW weights transposed on each call, for conv_path_choice the
/// transposes around cuDNN at every shape; conv_nchw_strides and conv1x1_cublaslt leave that
/// way out of the choice), for A/B
/// measurements and as a way around a kernel problem on an untested card.
pub fn enabled(kernel: &str) -> bool {
    // Read once: the kernels ask on every call.
    static DISABLED: OnceLock<Vec<String>> = OnceLock::new();
    let disabled = DISABLED.get_or_init(|| {
        std::env::var("VIVIFY_CUDA_DISABLE")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    });
    !disabled.iter().any(|d| d == kernel || d == "all")
}
