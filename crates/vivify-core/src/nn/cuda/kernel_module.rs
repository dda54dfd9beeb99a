//! vivify's kernel modules (kernels/*.cu), compiled by build.rs to fatbins: machine code for
//! sm_80 (which Ampere and Ada cards run) and sm_90 (Hopper), plus compute_80 PTX that the driver
//! compiles for any newer card. From PTX alone the driver JIT-compiles each module on its first
//! use in a process whose driver cache does not hold it (a fresh machine or container); the
//! attention module is 2.4 MB of PTX.

use candle_core::cuda_backend::DeviceId;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule, CudaStream, LaunchArgs};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::{CudaDevice, Result};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// A fatbin built into the binary, by name.
pub(crate) struct KernelModule {
    pub name: &'static str,
    pub fatbin: &'static [u8],
}

/// `kernel_module!("group_norm")`: OUT_DIR/group_norm.fatbin as a [`KernelModule`].
macro_rules! kernel_module {
    ($name:literal) => {
        $crate::nn::cuda::kernel_module::KernelModule {
            name: $name,
            fatbin: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".fatbin")),
        }
    };
}
pub(crate) use kernel_module;

/// A kernel's entry point and the device stream it launches on.
pub(crate) struct Kernel {
    func: CudaFunction,
    stream: Arc<CudaStream>,
}

impl Kernel {
    pub fn builder(&self) -> LaunchArgs<'_> {
        self.stream.launch_builder(&self.func)
    }
}

type Loaded = HashMap<(DeviceId, &'static str), Arc<CudaModule>>;

/// The modules loaded so far, per device.
static LOADED: LazyLock<Mutex<Loaded>> = LazyLock::new(|| Mutex::new(HashMap::new()));

impl KernelModule {
    /// Entry point `name` of this module on `dev`, loading the module on first use.
    pub fn kernel(&self, dev: &CudaDevice, name: &str) -> Result<Kernel> {
        let module = {
            let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
            match loaded.get(&(dev.id(), self.name)) {
                Some(m) => m.clone(),
                None => {
                    let stream = dev.cuda_stream();
                    // A copy: the driver reads the image through an aligned pointer.
                    let image = Ptx::from_binary(self.fatbin.to_vec());
                    let m = stream.context().load_module(image).map_err(|e| {
                        candle_core::Error::Msg(format!(
                            "loading vivify's {} kernels: {e}",
                            self.name
                        ))
                    })?;
                    loaded.insert((dev.id(), self.name), m.clone());
                    m
                }
            }
        };
        let func = module.load_function(name).map_err(|e| {
            candle_core::Error::Msg(format!("vivify's {} kernels: {name}: {e}", self.name))
        })?;
        Ok(Kernel {
            func,
            stream: dev.cuda_stream(),
        })
    }
}
