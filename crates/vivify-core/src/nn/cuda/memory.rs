//! What the CUDA device holds: its name and free memory, and the high-water mark of the stream
//! allocator's pool (candle allocates with cuMemAllocAsync from the device's default pool, so the
//! pool's `USED_MEM_HIGH` is the peak of live tensor bytes, like torch's max_memory_allocated).

use candle_core::backend::BackendDevice;
use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::{CudaDevice, Result};

#[derive(Debug, Clone, serde::Serialize)]
pub struct CudaFacts {
    pub name: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// The driver's CUDA version, e.g. 13000 for 13.0.
    pub driver_cuda_version: i32,
}

pub fn facts(device: &CudaDevice) -> Result<CudaFacts> {
    let ctx = device.cuda_stream().context().clone();
    ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
    let (free, total) = ctx.mem_get_info().map_err(candle_core::Error::wrap)?;
    let mut version = 0;
    // SAFETY: plain query into a local.
    check(unsafe { sys::cuDriverGetVersion(&mut version) })?;
    Ok(CudaFacts {
        name: ctx.name().map_err(candle_core::Error::wrap)?,
        total_bytes: total as u64,
        free_bytes: free as u64,
        driver_cuda_version: version,
    })
}

/// Bytes in use at the pool's high-water mark since the last `reset_peak`.
pub fn peak_bytes(device: &CudaDevice) -> Result<u64> {
    let pool = default_pool(device)?;
    let mut value = 0u64;
    // SAFETY: USED_MEM_HIGH is a cuuint64_t.
    check(unsafe {
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut value as *mut u64).cast(),
        )
    })?;
    Ok(value)
}

/// Restarts the high-water mark from the bytes in use now.
pub fn reset_peak(device: &CudaDevice) -> Result<()> {
    device.synchronize()?;
    let pool = default_pool(device)?;
    let mut zero = 0u64;
    // SAFETY: resetting USED_MEM_HIGH takes a cuuint64_t zero.
    check(unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
            (&mut zero as *mut u64).cast(),
        )
    })
}

fn default_pool(device: &CudaDevice) -> Result<sys::CUmemoryPool> {
    let ctx = device.cuda_stream().context().clone();
    ctx.bind_to_thread().map_err(candle_core::Error::wrap)?;
    let mut pool = std::ptr::null_mut();
    // SAFETY: writes the pool handle into a local.
    check(unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) })?;
    Ok(pool)
}

fn check(result: sys::CUresult) -> Result<()> {
    if result == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        candle_core::bail!("CUDA driver call failed: {result:?}")
    }
}
