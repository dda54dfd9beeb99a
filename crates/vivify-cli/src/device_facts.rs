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
    /// the CUDA build reports for an opened device; None otherwise.
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
    let device = (built && open).then(|| candle_core::Device::new_cuda(ordinal));
    let facts = match &device {
        Some(Ok(d)) => vivify_core::device::gpu_facts(d).ok().flatten(),
        _ => None,
    };
    let note = match (&device, &facts) {
        _ if !built => "this build has no CUDA support (build with --features cuda)".into(),
        (None, _) => "not opened (pass --device cuda to query it)".into(),
        (Some(Err(e)), _) => format!("cuda:{ordinal} does not open: {e}"),
        (Some(Ok(_)), None) => "the device opened but did not answer the queries".into(),
        (Some(Ok(_)), Some(_)) => String::new(),
    };
    CudaFacts {
        built_with_cuda: built,
        device_opens: device.as_ref().map(Result::is_ok),
        name: facts.as_ref().map(|f| f.name.clone()),
        total_bytes: facts.as_ref().map(|f| f.total_bytes),
        free_bytes: facts.as_ref().map(|f| f.free_bytes),
        driver_version: facts
            .as_ref()
            .map(|f| format!("supports CUDA {}", f.driver_cuda_version)),
        cuda_version: Some(vivify_core::device::CUDA_TOOLKIT.to_string()).filter(|v| !v.is_empty()),
        cudnn: facts.as_ref().map(|f| f.cudnn_version.is_some()),
        fused_attention: facts.as_ref().map(|f| f.fused_attention),
        note,
    }
}
