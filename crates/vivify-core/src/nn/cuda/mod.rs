//! vivify's own CUDA paths (feature `cuda`): fused attention, fused GroupNorm(+SiLU), LayerNorm
//! and GEGLU, linear layers with the bias in the GEMM's epilogue, the temporal convolution as one
//! GEMM, cuDNN convolution with tensor-core math and measured algorithm choice (feature `cudnn`;
//! through the graph API with heuristics instead, opt-in), and the device memory pool's counters.

#[cfg(feature = "cudnn")]
pub mod cudnn_conv;
#[cfg(feature = "cudnn")]
pub mod cudnn_graph_conv;
pub mod elementwise;
pub mod flash_attention;
pub mod frame_conv;
pub mod geglu;
pub mod group_norm;
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

/// Whether one of vivify's CUDA kernels may run: `VIVIFY_CUDA_DISABLE=attention,group_norm,...`
/// (names: attention, attention_async, attention_ldmatrix, group_norm, layer_norm, geglu, linear,
/// elementwise, frame_conv, cudnn_conv, conv1x1_gemm, or `all`) falls back to candle's ops, for
/// A/B measurements and as a way around a kernel problem on an untested card.
pub fn enabled(kernel: &str) -> bool {
    static DISABLED: OnceLock<Vec<String>> = OnceLock::new();
    let disabled = DISABLED.get_or_init(|| names("VIVIFY_CUDA_DISABLE"));
    !disabled.iter().any(|d| d == kernel || d == "all")
}

/// Whether a kernel that is built but not yet verified on a device may run:
/// `VIVIFY_CUDA_ENABLE=attention_ldmatrix,cudnn_graph,channels_last_handoff` (the only such paths
/// now).
/// bench/gpu/run.sh sets it when the kernel's test passes on the card; once its figures are in,
/// it becomes the default.
pub fn opted_in(kernel: &str) -> bool {
    static ENABLED: OnceLock<Vec<String>> = OnceLock::new();
    let opted = ENABLED.get_or_init(|| names("VIVIFY_CUDA_ENABLE"));
    opted.iter().any(|e| e == kernel) && enabled(kernel)
}

/// The comma-separated names in an environment variable. Read once by each caller: the kernels
/// ask on every call.
fn names(var: &str) -> Vec<String> {
    std::env::var(var)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}
