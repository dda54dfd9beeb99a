//! What each device can compute.

use crate::{Error, Result};
use candle_core::{DType, Device};

/// Refuses compute dtypes the device cannot run: candle's CPU backend has no bf16 matmul or
/// convolution, and only floating dtypes make sense for the models.
pub fn check_compute_dtype(dtype: DType, device: &Device) -> Result<()> {
    match (dtype, device) {
        (DType::F32 | DType::F16, _) => Ok(()),
        (DType::BF16, Device::Cpu) => Err(Error::InvalidArgument {
            field: "dtype",
            message:
                "bf16 compute is not available on the CPU; use f32 or f16 there (bf16 runs on CUDA)"
                    .into(),
        }),
        (DType::BF16, _) => Ok(()),
        (other, _) => Err(Error::InvalidArgument {
            field: "dtype",
            message: format!("{other:?} is not a compute dtype; use f32, f16 or bf16"),
        }),
    }
}

/// The CUDA toolkit the build's kernels were compiled with ("13.0"), empty without CUDA.
pub const CUDA_TOOLKIT: &str = env!("VIVIFY_CUDA_TOOLKIT");

/// What a CUDA device reports about itself (the `cuda` build only).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GpuFacts {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// The newest CUDA version the driver supports, e.g. "13.0".
    pub driver_cuda_version: String,
    /// The cuDNN library loaded, e.g. "9.14.0"; None in a build without the `cudnn` feature.
    pub cudnn_version: Option<String>,
    /// vivify's fused attention kernel (f16/bf16, head dims 64, 80, 128).
    pub fused_attention: bool,
}

/// The facts of a CUDA device; None for the CPU (or any device in a build without CUDA).
pub fn gpu_facts(device: &Device) -> Result<Option<GpuFacts>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        let f = crate::nn::cuda::memory::facts(cuda)?;
        #[cfg(feature = "cudnn")]
        let cudnn_version = {
            let v = candle_core::cuda_backend::cudarc::cudnn::result::get_version();
            Some(format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
        };
        #[cfg(not(feature = "cudnn"))]
        let cudnn_version = None;
        return Ok(Some(GpuFacts {
            name: f.name,
            total_bytes: f.total_bytes,
            free_bytes: f.free_bytes,
            driver_cuda_version: format!(
                "{}.{}",
                f.driver_cuda_version / 1000,
                (f.driver_cuda_version % 1000) / 10
            ),
            cudnn_version,
            fused_attention: crate::nn::cuda::enabled("attention"),
        }));
    }
    let _ = device;
    Ok(None)
}

/// Restarts the device's peak-memory counter (CUDA only; a no-op elsewhere).
pub fn reset_peak_memory(device: &Device) -> Result<()> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        crate::nn::cuda::memory::reset_peak(cuda)?;
    }
    let _ = device;
    Ok(())
}

/// Peak bytes of live device tensors since the last reset, where the device counts them (CUDA).
pub fn peak_memory(device: &Device) -> Result<Option<u64>> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        return Ok(Some(crate::nn::cuda::memory::peak_bytes(cuda)?));
    }
    let _ = device;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_refuses_bf16_and_integers() {
        assert!(check_compute_dtype(DType::F32, &Device::Cpu).is_ok());
        assert!(check_compute_dtype(DType::F16, &Device::Cpu).is_ok());
        let err = check_compute_dtype(DType::BF16, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`dtype`") && err.contains("bf16"), "{err}");
        assert!(check_compute_dtype(DType::U8, &Device::Cpu).is_err());
    }
}
