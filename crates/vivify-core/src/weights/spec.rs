//! The list of tensors (name, shape) a model reads, recorded by building the model against a
//! backend that hands out zero-cost broadcast views instead of real weights.

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use std::sync::{Arc, Mutex};

use crate::config::UNetConfig;
use crate::models::unet::I2VGenXLUNet;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

struct Recorder {
    seen: Arc<Mutex<Vec<TensorSpec>>>,
}

impl SimpleBackend for Recorder {
    fn get(&self, s: Shape, name: &str, _: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.seen.lock().expect("recorder lock").push(TensorSpec {
            name: name.to_string(),
            shape: s.dims().to_vec(),
        });
        // A stride-0 view of one zero: building the full-size model allocates nothing.
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("tensor {name} requested without a shape while recording a model spec")
    }

    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Records every tensor `build` reads, sorted by name.
pub fn spec_of<T>(build: impl FnOnce(VarBuilder) -> Result<T>) -> Result<Vec<TensorSpec>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend: Box<dyn SimpleBackend> = Box::new(Recorder { seen: seen.clone() });
    build(VarBuilder::from_backend(backend, DType::F32, Device::Cpu))?;
    let mut seen = std::mem::take(&mut *seen.lock().expect("recorder lock"));
    seen.sort_by(|a, b| a.name.cmp(&b.name));
    seen.dedup();
    Ok(seen)
}

/// The UNet's tensors for `config`.
pub fn unet_spec(config: &UNetConfig) -> Result<Vec<TensorSpec>> {
    spec_of(|vb| I2VGenXLUNet::new(config, vb))
}
