//! CLIP text and vision encoders against transformers 5.24 (f32, CPU) on tiny random models
//! (tools/parity/clip_fixtures.py), the published-size tensor lists, and checkpoint layouts.

mod common;

use candle_core::{DType, Device, Tensor};
use common::{Fixture, assert_close, fixtures_dir, relative_error};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use vivify_core::Error;
use vivify_core::models::clip::{
    ClipTextConfig, ClipTextModel, ClipVisionConfig, ClipVisionModelWithProjection, causal_mask,
};
use vivify_core::weights::TensorSpec;

/// Relative L2 error allowed against transformers in f32.
const TOL: f64 = 1e-5;
/// transformers' CLIPTextModel / CLIPVisionModelWithProjection at the published configs, counted
/// on the meta device (also recorded in the manifest).
const PUBLISHED_TEXT_PARAMS: usize = 352_984_064;
const PUBLISHED_VISION_PARAMS: usize = 632_076_800;

fn clip_dir() -> PathBuf {
    fixtures_dir().join("clip")
}

fn fixture() -> Fixture {
    Fixture::load(&clip_dir().join("activations.safetensors"))
}

fn text(layout: &str, variant: Option<&str>) -> ClipTextModel {
    ClipTextModel::load(&clip_dir().join(layout), variant, DType::F32, &Device::Cpu).unwrap()
}

fn vision_from(dir: &Path) -> ClipVisionModelWithProjection {
    ClipVisionModelWithProjection::load(dir, None, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn text_encoder_matches_transformers_in_both_layouts() {
    let fx = fixture();
    let ids = fx.tensor("text.in.input_ids");
    // text_bare: transformers 5's own save (bare names, f32); text_prefixed: published names,
    // the fp16 variant and a position_ids buffer. Same values, so the same outputs.
    let bare = text("text_bare", None);
    let prefixed = text("text_prefixed", Some("fp16"));
    for (layout, model) in [("bare", &bare), ("prefixed", &prefixed)] {
        let emb = model.embed(&ids).unwrap();
        assert_close(
            &format!("text {layout} embeddings"),
            &emb,
            &fx.tensor("text.embeddings"),
            TOL,
        );
        let mask = causal_mask(77, &Device::Cpu).unwrap();
        let layer0 = model.encoder.layers[0]
            .forward(&fx.tensor("text.embeddings"), Some(&mask))
            .unwrap();
        assert_close(
            &format!("text {layout} layer 0"),
            &layer0,
            &fx.tensor("text.layer0.out"),
            TOL,
        );
        assert_close(
            &format!("text {layout} clip_skip=1 (penultimate + final_layer_norm)"),
            &model.forward(&ids).unwrap(),
            &fx.tensor("text.penultimate_normed"),
            TOL,
        );
        assert_close(
            &format!("text {layout} last_hidden_state"),
            &model.last_hidden_state(&ids).unwrap(),
            &fx.tensor("text.last_hidden_state"),
            TOL,
        );
    }
    let (a, b) = (bare.forward(&ids).unwrap(), prefixed.forward(&ids).unwrap());
    assert_eq!(relative_error(&a, &b), 0.0);
}

#[test]
fn text_ids_in_any_integer_dtype_and_clip_skip_range() {
    let fx = fixture();
    let model = text("text_bare", None);
    let ids = fx.tensor("text.in.input_ids");
    let reference = model.forward(&ids).unwrap();
    let as_u32 = model.forward(&ids.to_dtype(DType::U32).unwrap()).unwrap();
    assert_eq!(relative_error(&as_u32, &reference), 0.0);

    // clip_skip 0 is the last hidden state; skipping every layer normalises the embeddings.
    let skip0 = model.forward_with_clip_skip(&ids, Some(0)).unwrap();
    let last = model.last_hidden_state(&ids).unwrap();
    assert_eq!(relative_error(&skip0, &last), 0.0);
    let layers = model.config.num_hidden_layers;
    let all = model.forward_with_clip_skip(&ids, Some(layers)).unwrap();
    let normed_embeddings =
        candle_core::Module::forward(&model.final_layer_norm, &fx.tensor("text.embeddings"))
            .unwrap();
    assert_close("clip_skip = layers", &all, &normed_embeddings, TOL);
    let err = model
        .forward_with_clip_skip(&ids, Some(layers + 1))
        .unwrap_err();
    assert!(err.to_string().contains("clip_skip"), "{err}");
}

#[test]
fn bad_text_input_is_an_error() {
    let model = text("text_bare", None);
    let dev = Device::Cpu;
    let cases: [(Tensor, &str); 5] = [
        (
            Tensor::new(&[[0u32, 1000]], &dev).unwrap(),
            "token id 1000 is outside the vocabulary",
        ),
        (
            Tensor::new(&[[0i64, -1]], &dev).unwrap(),
            "token id -1 is outside",
        ),
        (Tensor::zeros((1, 78), DType::U32, &dev).unwrap(), "1 to 77"),
        (
            Tensor::zeros(5, DType::U32, &dev).unwrap(),
            "(batch, tokens)",
        ),
        (
            Tensor::zeros((1, 4), DType::F32, &dev).unwrap(),
            "must be integers",
        ),
    ];
    for (ids, expected) in cases {
        let err = model.forward(&ids).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn text_computes_in_f16_on_cpu() {
    let fx = fixture();
    let dir = clip_dir().join("text_prefixed");
    let model = ClipTextModel::load(&dir, Some("fp16"), DType::F16, &Device::Cpu).unwrap();
    let out = model.forward(&fx.tensor("text.in.input_ids")).unwrap();
    assert_eq!(out.dtype(), DType::F16);
    assert_close(
        "text f16 compute",
        &out,
        &fx.tensor("text.penultimate_normed"),
        5e-3,
    );
    let err = ClipTextModel::load(&dir, None, DType::BF16, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("bf16"), "{err}");
}

#[test]
fn vision_encoder_matches_transformers() {
    let fx = fixture();
    let model = vision_from(&clip_dir().join("vision"));
    let px = fx.tensor("vision.in.pixel_values");
    assert_eq!(px.dtype(), DType::F16);
    let emb = model.embed(&px).unwrap();
    assert_close(
        "vision embeddings",
        &emb,
        &fx.tensor("vision.embeddings"),
        TOL,
    );
    let pre = candle_core::Module::forward(&model.pre_layrnorm, &emb).unwrap();
    assert_close(
        "vision pre_layrnorm",
        &pre,
        &fx.tensor("vision.pre_layrnorm"),
        TOL,
    );
    let layer0 = model.encoder.layers[0]
        .forward(&fx.tensor("vision.pre_layrnorm"), None)
        .unwrap();
    assert_close(
        "vision layer 0",
        &layer0,
        &fx.tensor("vision.layer0.out"),
        TOL,
    );
    assert_close(
        "vision last_hidden_state",
        &model.last_hidden_state(&px).unwrap(),
        &fx.tensor("vision.last_hidden_state"),
        TOL,
    );
    assert_close(
        "vision image_embeds",
        &model.forward(&px).unwrap(),
        &fx.tensor("vision.image_embeds"),
        TOL,
    );
}

#[test]
fn bad_pixel_values_are_an_error() {
    let model = vision_from(&clip_dir().join("vision"));
    let dev = Device::Cpu;
    for (px, expected) in [
        (
            Tensor::zeros((1, 3, 64, 64), DType::F32, &dev).unwrap(),
            "(batch, 3, 56, 56)",
        ),
        (
            Tensor::zeros((3, 56, 56), DType::F32, &dev).unwrap(),
            "(batch, 3, 56, 56)",
        ),
        (
            Tensor::zeros((1, 3, 56, 56), DType::U8, &dev).unwrap(),
            "must be floats",
        ),
    ] {
        let err = model.forward(&px).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
}

fn load_tensors(file: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(file, &Device::Cpu).unwrap()
}

/// A component dir holding `config` (copied from `from`) and the given tensors.
fn component(from: &Path, tensors: &HashMap<String, Tensor>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("config.json"), dir.path().join("config.json")).unwrap();
    candle_core::safetensors::save(tensors, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn vision_loads_without_prefix_and_with_position_ids() {
    let fx = fixture();
    let src = clip_dir().join("vision");
    let reference = vision_from(&src)
        .forward(&fx.tensor("vision.in.pixel_values"))
        .unwrap();
    let mut bare: HashMap<String, Tensor> = load_tensors(&src.join("model.safetensors"))
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("vision_model.").unwrap_or(&k).to_string(), v))
        .collect();
    bare.insert(
        "embeddings.position_ids".into(),
        Tensor::arange(0i64, 17, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap(),
    );
    let dir = component(&src, &bare);
    let out = vision_from(dir.path())
        .forward(&fx.tensor("vision.in.pixel_values"))
        .unwrap();
    assert_eq!(relative_error(&out, &reference), 0.0);
}

fn mismatch(result: vivify_core::Result<impl Sized>) -> String {
    match result {
        Err(e @ Error::CheckpointMismatch(_)) => e.to_string(),
        Err(e) => panic!("expected a checkpoint mismatch, got {e}"),
        Ok(_) => panic!("a bad checkpoint was accepted"),
    }
}

#[test]
fn misshaped_or_missing_tensors_are_named() {
    let src = clip_dir().join("text_bare");
    let mut tensors = load_tensors(&src.join("model.safetensors"));
    let name = "encoder.layers.1.mlp.fc1.weight";
    let cut = tensors[name].narrow(0, 0, 60).unwrap();
    tensors.insert(name.into(), cut);
    tensors.remove("final_layer_norm.bias");
    let dir = component(&src, &tensors);
    let err = mismatch(ClipTextModel::load(
        dir.path(),
        None,
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        err.contains(&format!(
            "tensor {name} has shape [60, 32], expected [64, 32]"
        )),
        "{err}"
    );
    assert!(
        err.contains("missing tensor final_layer_norm.bias"),
        "{err}"
    );

    // Published names: the prefix is kept in the message.
    let src = clip_dir().join("vision");
    let mut tensors = load_tensors(&src.join("model.safetensors"));
    let name = "vision_model.embeddings.position_embedding.weight";
    let cut = tensors[name].narrow(0, 0, 16).unwrap();
    tensors.insert(name.into(), cut);
    tensors.insert(
        "visual_projection.bias".into(),
        Tensor::zeros(24, DType::F32, &Device::Cpu).unwrap(),
    );
    let dir = component(&src, &tensors);
    let err = mismatch(ClipVisionModelWithProjection::load(
        dir.path(),
        None,
        DType::F32,
        &Device::Cpu,
    ));
    assert!(
        err.contains(&format!(
            "tensor {name} has shape [16, 32], expected [17, 32]"
        )),
        "{err}"
    );
    assert!(
        err.contains("unexpected tensor visual_projection.bias"),
        "{err}"
    );
}

#[derive(serde::Deserialize)]
struct ManifestPart {
    params: usize,
    tensors: Vec<TensorSpec>,
}

fn manifest() -> HashMap<String, ManifestPart> {
    let path = fixtures_dir().join("clip_manifest_i2vgen_xl.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn sorted(mut specs: Vec<TensorSpec>) -> Vec<TensorSpec> {
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

fn count(specs: &[TensorSpec]) -> usize {
    specs.iter().map(TensorSpec::numel).sum()
}

#[test]
fn published_parameter_counts_are_exact() {
    let m = manifest();
    let text = ClipTextModel::spec(&ClipTextConfig::i2vgen_xl(), true).unwrap();
    let vision = ClipVisionModelWithProjection::spec(&ClipVisionConfig::i2vgen_xl(), true).unwrap();
    assert_eq!(count(&text), PUBLISHED_TEXT_PARAMS);
    assert_eq!(count(&vision), PUBLISHED_VISION_PARAMS);
    assert_eq!(m["text"].params, PUBLISHED_TEXT_PARAMS);
    assert_eq!(m["vision"].params, PUBLISHED_VISION_PARAMS);
}

#[test]
fn published_names_and_shapes_equal_transformers_manifest() {
    let mut m = manifest();
    // transformers 5's state dict names the text tower bare; published files add `text_model.`.
    let text = sorted(m.remove("text").unwrap().tensors);
    let config = ClipTextConfig::i2vgen_xl();
    assert_eq!(ClipTextModel::spec(&config, false).unwrap(), text);
    let prefixed: Vec<TensorSpec> = text
        .iter()
        .map(|t| TensorSpec {
            name: format!("text_model.{}", t.name),
            shape: t.shape.clone(),
        })
        .collect();
    assert_eq!(
        ClipTextModel::spec(&config, true).unwrap(),
        sorted(prefixed)
    );

    let vision = sorted(m.remove("vision").unwrap().tensors);
    let ours = ClipVisionModelWithProjection::spec(&ClipVisionConfig::i2vgen_xl(), true).unwrap();
    assert_eq!(ours, vision);
}
