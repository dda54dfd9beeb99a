//! Checkpoint checks and dtypes: a checkpoint that does not match the model is refused with the
//! offending tensors named; f32, f16 and bf16 files load, and the UNet computes in each dtype.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{Fixture, assert_close, fixtures_dir, relative_error};
use std::collections::HashMap;
use std::path::Path;
use vivify_core::Error;
use vivify_core::models::unet::{I2VGenXLUNet, UNetInputs, WEIGHTS_STEM};
use vivify_core::nn::compute::ComputeOptions;

fn tiny_a_dir() -> std::path::PathBuf {
    fixtures_dir().join("unet/tiny_a")
}

fn tiny_a_weights() -> HashMap<String, Tensor> {
    let file = tiny_a_dir().join(format!("unet/{WEIGHTS_STEM}.safetensors"));
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()
}

/// A diffusers component dir holding tiny_a's config and the given tensors.
fn write_component(dir: &Path, tensors: &HashMap<String, Tensor>) {
    std::fs::copy(
        tiny_a_dir().join("unet/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    candle_core::safetensors::save(tensors, dir.join(format!("{WEIGHTS_STEM}.safetensors")))
        .unwrap();
}

fn load_error(tensors: &HashMap<String, Tensor>) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_component(dir.path(), tensors);
    match I2VGenXLUNet::load(dir.path(), None, DType::F32, &Device::Cpu) {
        Err(e @ Error::CheckpointMismatch(_)) => e.to_string(),
        Err(e) => panic!("expected a checkpoint mismatch, got {e}"),
        Ok(_) => panic!("a bad checkpoint was accepted"),
    }
}

#[test]
fn missing_extra_and_misshaped_tensors_are_named() {
    let mut tensors = tiny_a_weights();
    let missing = "mid_block.temp_convs.1.conv4.3.weight";
    tensors.remove(missing);
    let err = load_error(&tensors);
    assert!(err.contains(&format!("missing tensor {missing}")), "{err}");

    let mut tensors = tiny_a_weights();
    tensors.insert(
        "up_blocks.9.extra.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_error(&tensors);
    assert!(
        err.contains("unexpected tensor up_blocks.9.extra.weight"),
        "{err}"
    );

    let mut tensors = tiny_a_weights();
    let name = "conv_in.weight";
    let reshaped = tensors[name].narrow(0, 0, 4).unwrap();
    tensors.insert(name.into(), reshaped);
    let err = load_error(&tensors);
    assert!(
        err.contains(&format!(
            "tensor {name} has shape [4, 8, 3, 3], expected [8, 8, 3, 3]"
        )),
        "{err}"
    );

    // All three at once: every problem is listed, not just the first.
    let mut tensors = tiny_a_weights();
    tensors.remove(missing);
    tensors.insert(
        "extra".into(),
        Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
    );
    let err = load_error(&tensors);
    assert!(err.contains("2 problem(s)"), "{err}");
}

#[test]
fn integer_tensors_are_refused() {
    let mut tensors = tiny_a_weights();
    let name = "conv_out.bias";
    let as_int = tensors[name].to_dtype(DType::I64).unwrap();
    tensors.insert(name.into(), as_int);
    let err = load_error(&tensors);
    assert!(
        err.contains(&format!("tensor {name} is stored as I64")),
        "{err}"
    );
}

#[test]
fn not_a_safetensors_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_a_dir().join("unet/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join(format!("{WEIGHTS_STEM}.safetensors")),
        b"definitely not weights",
    )
    .unwrap();
    let err = I2VGenXLUNet::load(dir.path(), None, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(WEIGHTS_STEM) && err.contains("safetensors"),
        "{err}"
    );

    let empty = tempfile::tempdir().unwrap();
    std::fs::copy(
        tiny_a_dir().join("unet/config.json"),
        empty.path().join("config.json"),
    )
    .unwrap();
    let err = I2VGenXLUNet::load(empty.path(), Some("fp16"), DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no weights found"), "{err}");
}

fn forward(unet: &I2VGenXLUNet, fx: &Fixture) -> Tensor {
    let sample = fx.tensor("unet.in.sample");
    let image_latents = fx.tensor("unet.in.image_latents");
    let image_embeddings = fx.tensor("unet.in.image_embeddings");
    let encoder_hidden_states = fx.tensor("unet.in.encoder_hidden_states");
    unet.forward(&UNetInputs {
        sample: &sample,
        timestep: fx.meta("unet.in.timestep"),
        fps: fx.meta("unet.in.fps"),
        image_latents: &image_latents,
        image_embeddings: &image_embeddings,
        encoder_hidden_states: &encoder_hidden_states,
        options: ComputeOptions::default(),
    })
    .unwrap()
}

#[test]
fn half_precision_files_load_exactly() {
    // Weights stored as f16 or bf16 load to the same f32 values as rounding them here.
    for dtype in [DType::F16, DType::BF16] {
        let rounded: HashMap<String, Tensor> = tiny_a_weights()
            .into_iter()
            .map(|(k, v)| (k, v.to_dtype(dtype).unwrap()))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        write_component(dir.path(), &rounded);
        let from_file = I2VGenXLUNet::load(dir.path(), None, DType::F32, &Device::Cpu).unwrap();
        let vb = candle_nn::VarBuilder::from_tensors(rounded, DType::F32, &Device::Cpu);
        let from_memory = I2VGenXLUNet::new(&from_file.config, vb).unwrap();
        let fx = Fixture::load(&tiny_a_dir().join("activations.safetensors"));
        let (a, b) = (forward(&from_file, &fx), forward(&from_memory, &fx));
        assert_eq!(relative_error(&a, &b), 0.0, "{dtype:?} weights");
    }
}

#[test]
fn computes_in_f16_on_cpu_and_refuses_bf16_there() {
    // Half-precision compute follows the f32 reference to f16's precision.
    let fx = Fixture::load(&tiny_a_dir().join("activations.safetensors"));
    let unet =
        I2VGenXLUNet::load(&tiny_a_dir().join("unet"), None, DType::F16, &Device::Cpu).unwrap();
    let out = forward(&unet, &fx);
    assert_eq!(out.dtype(), DType::F16);
    assert_close("f16 compute", &out, &fx.tensor("unet.out"), 5e-3);

    // candle has no CPU bf16 matmul: a clear error instead of a failure mid-forward.
    let err = I2VGenXLUNet::load(&tiny_a_dir().join("unet"), None, DType::BF16, &Device::Cpu)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("bf16 compute is not available on the CPU"),
        "{err}"
    );
}

#[test]
fn truncated_file_is_named_before_loading() {
    let dir = tempfile::tempdir().unwrap();
    write_component(dir.path(), &tiny_a_weights());
    let file = dir.path().join(format!("{WEIGHTS_STEM}.safetensors"));
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 100]).unwrap();
    let err = I2VGenXLUNet::load(dir.path(), None, DType::F32, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated: tensor") && err.contains(WEIGHTS_STEM),
        "{err}"
    );
}
