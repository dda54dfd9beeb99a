//! vivify's own CUDA paths (feature `cuda`): fused attention, fused GroupNorm(+SiLU), LayerNorm
//! and GEGLU, linear layers with the bias in the GEMM's epilogue, the temporal convolution as one
//! GEMM, cuDNN convolution with tensor-core math and measured algorithm choice (feature `cudnn`),
//! and the device memory pool's counters.

#[cfg(feature = "cudnn")]
pub mod cudnn_conv;
pub mod elementwise;
pub mod flash_attention;
pub mod frame_conv;
pub mod geglu;
pub mod group_norm;
pub mod layer_norm;
pub mod linear;
pub mod memory;

/// The suffix of a kernel's entry point for `dtype` (`layer_norm_f16`, `geglu_bf16`, ...).
pub(crate) fn kernel_type_name(dtype: candle_core::DType) -> &'static str {
    use candle_core::DType;
    match dtype {
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "f32",
    }
}

/// Whether one of vivify's CUDA kernels may run: `VIVIFY_CUDA_DISABLE=attention,group_norm,...`
/// (names: attention, attention_async, group_norm, layer_norm, geglu, linear, elementwise,
/// frame_conv, cudnn_conv, conv1x1_gemm, or `all`) falls back to candle's ops, for A/B measurements and as a way around a
/// kernel problem on an untested card.
pub fn enabled(kernel: &str) -> bool {
    use std::sync::OnceLock;
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
