//! What `vivify doctor` reports about the machine: the CPU and host memory (from /proc), and
//! what this build's candle can say about CUDA.

use vivify_core::memory::available::SystemMemory;

#[derive(Debug, Clone)]
pub struct CpuFacts {
    /// `model name` of /proc/cpuinfo.
    pub model: Option<String>,
    /// Threads candle's CPU kernels use.
    pub threads: usize,
    pub avx: bool,
    pub f16c: bool,
    pub mkl: bool,
    pub memory: Option<SystemMemory>,
}

impl CpuFacts {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "model": self.model,
            "threads": self.threads,
            "avx": self.avx,
            "f16c": self.f16c,
            "mkl": self.mkl,
            "total_bytes": self.memory.map(|m| m.total_bytes),
            "available_bytes": self.memory.map(|m| m.available_bytes),
        })
    }
}

pub fn cpu_facts() -> CpuFacts {
    let model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    CpuFacts {
        model,
        threads: candle_core::utils::get_num_threads(),
        avx: candle_core::utils::with_avx(),
        f16c: candle_core::utils::with_f16c(),
        mkl: candle_core::utils::has_mkl(),
        memory: SystemMemory::read(),
    }
}

/// CUDA as far as this build can see it.
#[derive(Debug, Clone)]
pub struct CudaFacts {
    /// Whether vivify was built with CUDA support (the `cuda` feature).
    pub built_with_cuda: bool,
    /// Whether device `ordinal` could be opened (None when not asked or not built with CUDA).
    pub device_opens: Option<bool>,
    /// Name, total and free memory, driver and CUDA versions, cuDNN and fused attention: what
    /// the CUDA build reports; None here, since candle exposes no device queries without it.
    pub name: Option<String>,
    pub total_bytes: Option<u64>,
    pub free_bytes: Option<u64>,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub cudnn: Option<bool>,
    pub fused_attention: Option<bool>,
    pub note: String,
}

impl CudaFacts {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "built_with_cuda": self.built_with_cuda,
            "device_opens": self.device_opens,
            "name": self.name,
            "total_bytes": self.total_bytes,
            "free_bytes": self.free_bytes,
            "driver_version": self.driver_version,
            "cuda_version": self.cuda_version,
            "cudnn": self.cudnn,
            "fused_attention": self.fused_attention,
            "note": self.note,
        })
    }
}

/// CUDA facts for device `ordinal`; `open` tries to open it (`--device cuda:N`).
pub fn cuda_facts(ordinal: usize, open: bool) -> CudaFacts {
    let built = candle_core::utils::cuda_is_available();
    let device_opens = (built && open).then(|| candle_core::Device::new_cuda(ordinal).is_ok());
    CudaFacts {
        built_with_cuda: built,
        device_opens,
        name: None,
        total_bytes: None,
        free_bytes: None,
        driver_version: None,
        cuda_version: None,
        cudnn: None,
        fused_attention: None,
        note: if built {
            "device name, memory, driver/CUDA versions, cuDNN and fused attention are not queried \
             by this build"
                .into()
        } else {
            "this build has no CUDA support (build with --features cuda)".into()
        },
    }
}
