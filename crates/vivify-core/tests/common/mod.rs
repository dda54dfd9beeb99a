//! Shared helpers of the parity tests: fixture loading and the relative-error measure.

#![allow(dead_code)]

use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A safetensors fixture written by tools/parity, with its string metadata. Repeated tensors are
/// stored once and named by `alias:<key>` metadata entries; `tensor` follows them.
pub struct Fixture {
    tensors: HashMap<String, Tensor>,
    meta: HashMap<String, String>,
}

impl Fixture {
    pub fn load(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap_or_default();
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).unwrap();
        Self { tensors, meta }
    }

    pub fn tensor(&self, key: &str) -> Tensor {
        if let Some(t) = self.tensors.get(key) {
            return t.clone();
        }
        match self.meta.get(key).and_then(|m| m.strip_prefix("alias:")) {
            Some(target) => self.tensor(target),
            None => panic!("fixture has no tensor {key}"),
        }
    }

    pub fn meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> T {
        let raw = self
            .meta
            .get(key)
            .unwrap_or_else(|| panic!("fixture has no metadata {key}"));
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("metadata {key}: {e}"))
    }

    pub fn has_meta(&self, key: &str) -> bool {
        self.meta.contains_key(key)
    }
}

/// ‖ours − reference‖ / ‖reference‖ over all elements, in f64.
pub fn relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(ours.dims(), reference.dims(), "shape mismatch");
    let a = ours
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let b = reference
        .to_dtype(candle_core::DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap();
    let diff = (a - &b)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    let norm = b
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    (diff / norm).sqrt()
}

/// Asserts the relative error is within `tol`, printing it either way.
pub fn assert_close(what: &str, ours: &Tensor, reference: &Tensor, tol: f64) {
    let err = relative_error(ours, reference);
    println!("{what}: relative error {err:.3e}");
    assert!(
        err <= tol,
        "{what}: relative error {err:.3e} exceeds {tol:.0e}"
    );
}
