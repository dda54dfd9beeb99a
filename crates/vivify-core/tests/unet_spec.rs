//! The UNet's tensor list at the published config: parameter count and diffusers' names/shapes.

use vivify_core::config::UNetConfig;
use vivify_core::weights::{TensorSpec, unet_spec};

/// diffusers' I2VGenXLUNet at the published config has exactly this many parameters.
const PUBLISHED_UNET_PARAMS: usize = 1_420_469_224;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn published_unet_has_exact_parameter_count() {
    let spec = unet_spec(&UNetConfig::i2vgen_xl()).unwrap();
    let total: usize = spec.iter().map(TensorSpec::numel).sum();
    assert_eq!(total, PUBLISHED_UNET_PARAMS);
}

#[test]
fn published_unet_names_and_shapes_equal_diffusers_manifest() {
    let text = std::fs::read_to_string(fixtures().join("unet_manifest_i2vgen_xl.json")).unwrap();
    let mut manifest: Vec<TensorSpec> = serde_json::from_str(&text).unwrap();
    manifest.sort_by(|a, b| a.name.cmp(&b.name));
    let ours = unet_spec(&UNetConfig::i2vgen_xl()).unwrap();
    let ours_names: std::collections::BTreeSet<_> = ours.iter().map(|t| &t.name).collect();
    let theirs_names: std::collections::BTreeSet<_> = manifest.iter().map(|t| &t.name).collect();
    let missing: Vec<_> = theirs_names.difference(&ours_names).collect();
    let extra: Vec<_> = ours_names.difference(&theirs_names).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing in ours: {missing:?}\nextra in ours: {extra:?}"
    );
    assert_eq!(ours, manifest);
}
