//! AutoencoderKL against diffusers 0.42.1 (f32, CPU): each module kind alone on the inputs
//! diffusers gave it, then whole encode (posterior mean) and decode, for two tiny configs
//! (tools/parity/vae_fixtures.py); chunked decoding; the published config's tensor list; and
//! checkpoint refusal.

mod common;

use candle_core::{DType, Device, Module, Tensor};
use common::{Fixture, assert_close, fixtures_dir};
use std::collections::{BTreeSet, HashMap};
use vivify_core::Error;
use vivify_core::models::unet::WEIGHTS_STEM;
use vivify_core::models::vae::{AutoencoderKL, VaeConfig};
use vivify_core::weights::TensorSpec;

/// Relative L2 error allowed against diffusers in f32.
const TOL: f64 = 1e-5;
/// (case, weight variant stored in the fixture)
const CASES: [(&str, Option<&str>); 2] = [("tiny_a", None), ("tiny_b", Some("fp16"))];
/// diffusers' AutoencoderKL at the published config has exactly this many parameters.
const PUBLISHED_VAE_PARAMS: usize = 83_653_863;

fn load(case: &str, variant: Option<&str>) -> (AutoencoderKL, Fixture) {
    let dir = fixtures_dir().join("vae").join(case);
    let vae = AutoencoderKL::load(&dir.join("vae"), variant, DType::F32, &Device::Cpu).unwrap();
    let fixture = Fixture::load(&dir.join("activations.safetensors"));
    (vae, fixture)
}

fn for_each_case(test: impl Fn(&str, &AutoencoderKL, &Fixture)) {
    for (case, variant) in CASES {
        let (vae, fx) = load(case, variant);
        test(case, &vae, &fx);
    }
}

#[test]
fn module_kinds() {
    for_each_case(|case, vae, fx| {
        let check = |what: &str, key: &str, run: &dyn Fn(&Tensor) -> Tensor| {
            let out = run(&fx.tensor(&format!("{key}.in")));
            assert_close(
                &format!("{case} {what}"),
                &out,
                &fx.tensor(&format!("{key}.out")),
                TOL,
            );
        };
        let enc = &vae.encoder;
        let dec = &vae.decoder;
        check("ResnetBlock2D", "encoder.down_blocks.0.resnets.0", &|x| {
            enc.down_blocks[0].resnets[0]
                .forward_without_time(x)
                .unwrap()
        });
        check(
            "ResnetBlock2D shortcut (encoder)",
            "encoder.down_blocks.1.resnets.0",
            &|x| {
                enc.down_blocks[1].resnets[0]
                    .forward_without_time(x)
                    .unwrap()
            },
        );
        let last = dec.up_blocks.len() - 1;
        check(
            "ResnetBlock2D shortcut (decoder)",
            &format!("decoder.up_blocks.{last}.resnets.0"),
            &|x| {
                dec.up_blocks[last].resnets[0]
                    .forward_without_time(x)
                    .unwrap()
            },
        );
        check(
            "Downsample2D (asymmetric pad)",
            "encoder.down_blocks.0.downsamplers.0",
            &|x| {
                let d = enc.down_blocks[0].downsampler.as_ref().unwrap();
                d.forward(x).unwrap()
            },
        );
        check("Upsample2D", "decoder.up_blocks.0.upsamplers.0", &|x| {
            let u = dec.up_blocks[0].upsampler.as_ref().unwrap();
            u.forward(x, None).unwrap()
        });
        check(
            "mid-block attention",
            "encoder.mid_block.attentions.0",
            &|x| {
                let a = enc.mid_block.attention.as_ref().unwrap();
                a.forward(x).unwrap()
            },
        );
        check("encoder mid block", "encoder.mid_block", &|x| {
            enc.mid_block.forward(x).unwrap()
        });
        check("decoder mid block", "decoder.mid_block", &|x| {
            dec.mid_block.forward(x).unwrap()
        });
    });
}

#[test]
fn encode_posterior_matches() {
    for_each_case(|case, vae, fx| {
        let image = fx.tensor("encode.in");
        let mean = vae.encode_mean(&image).unwrap();
        assert_close(
            &format!("{case} encode mean"),
            &mean,
            &fx.tensor("encode.mean"),
            TOL,
        );
        let (_, logvar) = vae.encode_posterior(&image).unwrap();
        assert_close(
            &format!("{case} encode logvar"),
            &logvar,
            &fx.tensor("encode.logvar"),
            TOL,
        );
    });
}

#[test]
fn decode_matches() {
    for_each_case(|case, vae, fx| {
        let out = vae.decode(&fx.tensor("decode.in")).unwrap();
        assert_close(
            &format!("{case} decode"),
            &out,
            &fx.tensor("decode.out"),
            TOL,
        );
    });
}

#[test]
fn chunked_decode_equals_whole() {
    for_each_case(|case, vae, fx| {
        // Five frames: the fixture's two, their negation, and their sum, so chunks of 3 leave a
        // short last chunk.
        let z = fx.tensor("decode.in");
        let z = Tensor::cat(&[&z, &z.neg().unwrap(), &z.sum_keepdim(0).unwrap()], 0).unwrap();
        assert_eq!(z.dim(0).unwrap(), 5);
        let whole = vae.decode(&z).unwrap();
        for chunk in [1, 3, 5, 8] {
            let out = vae.decode_chunked(&z, chunk).unwrap();
            assert_close(
                &format!("{case} decode_chunked({chunk})"),
                &out,
                &whole,
                1e-7,
            );
        }
        assert!(vae.decode_chunked(&z, 0).is_err());
    });
}

/// Decoding in row bands (GroupNorm statistics over the whole frame, one halo row per 3x3
/// convolution) gives the unbanded decode: far above the 40 dB asked of a tiled decoder, and
/// within float rounding, for bands that split every level unevenly; encoding in row bands
/// gives diffusers' posterior mean.
#[test]
fn row_band_encode_and_decode_equal_whole() {
    use vivify_core::nn::compute::ComputeOptions;
    for_each_case(|case, vae, fx| {
        let z = fx.tensor("decode.in");
        let whole = vae.decode(&z).unwrap();
        for band in [1, 3, 5, 1000] {
            let opts = ComputeOptions {
                vae_row_band: Some(band),
                attention_query_chunk: Some(7),
                ..Default::default()
            };
            let mean = vae.encode_mean_with(&fx.tensor("encode.in"), opts).unwrap();
            assert_close(
                &format!("{case} encode mean, row band {band}"),
                &mean,
                &fx.tensor("encode.mean"),
                TOL,
            );
            let out = vae.decode_with(&z, opts).unwrap();
            assert_eq!(out.dims(), whole.dims());
            // images in [-1, 1]: peak-to-peak 2
            let mse = (&out - &whole)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let psnr = 10.0 * (4.0 / mse.max(1e-30)).log10();
            assert!(psnr >= 40.0, "{case} band {band}: {psnr:.1} dB");
            assert_close(&format!("{case} row band {band}"), &out, &whole, 1e-5);
        }
    });
}

#[test]
fn bad_inputs_are_errors() {
    let (vae, fx) = load("tiny_a", None);
    let image = fx.tensor("encode.in");
    let wrong_channels = image.narrow(1, 0, 2).unwrap();
    assert!(vae.encode_mean(&wrong_channels).is_err());
    assert!(vae.encode_mean(&image.flatten_from(2).unwrap()).is_err());
    assert!(vae.decode(&image).is_err());
}

#[test]
fn scaling_factor_comes_from_the_config() {
    let (vae, _) = load("tiny_a", None);
    assert_eq!(vae.scaling_factor(), 0.5);
    let (vae, _) = load("tiny_b", Some("fp16"));
    assert_eq!(vae.scaling_factor(), 0.25);
    assert_eq!(vae.config.latent_channels, 3);
}

#[test]
fn published_vae_has_exact_parameter_count() {
    let spec = AutoencoderKL::spec(&VaeConfig::i2vgen_xl()).unwrap();
    let total: usize = spec.iter().map(TensorSpec::numel).sum();
    assert_eq!(total, PUBLISHED_VAE_PARAMS);
}

#[test]
fn published_vae_names_and_shapes_equal_diffusers_manifest() {
    let text = std::fs::read_to_string(fixtures_dir().join("vae_manifest_i2vgen_xl.json")).unwrap();
    let mut manifest: Vec<TensorSpec> = serde_json::from_str(&text).unwrap();
    manifest.sort_by(|a, b| a.name.cmp(&b.name));
    let ours = AutoencoderKL::spec(&VaeConfig::i2vgen_xl()).unwrap();
    let ours_names: BTreeSet<_> = ours.iter().map(|t| &t.name).collect();
    let theirs_names: BTreeSet<_> = manifest.iter().map(|t| &t.name).collect();
    let missing: Vec<_> = theirs_names.difference(&ours_names).collect();
    let extra: Vec<_> = ours_names.difference(&theirs_names).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing in ours: {missing:?}\nextra in ours: {extra:?}"
    );
    assert_eq!(ours, manifest);
}

#[test]
fn checkpoint_with_a_missing_tensor_is_refused() {
    let src = fixtures_dir().join("vae/tiny_a/vae");
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(
        src.join(format!("{WEIGHTS_STEM}.safetensors")),
        &Device::Cpu,
    )
    .unwrap();
    let missing = "encoder.mid_block.attentions.0.to_k.bias";
    assert!(tensors.remove(missing).is_some());
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    candle_core::safetensors::save(
        &tensors,
        dir.path().join(format!("{WEIGHTS_STEM}.safetensors")),
    )
    .unwrap();
    match AutoencoderKL::load(dir.path(), None, DType::F32, &Device::Cpu) {
        Err(e @ Error::CheckpointMismatch(_)) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("missing tensor {missing}")), "{msg}");
        }
        Err(e) => panic!("expected a checkpoint mismatch, got {e}"),
        Ok(_) => panic!("a checkpoint without {missing} was accepted"),
    }
}

#[test]
fn bf16_compute_is_refused_on_the_cpu() {
    let dir = fixtures_dir().join("vae/tiny_a/vae");
    let err = AutoencoderKL::load(&dir, None, DType::BF16, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("bf16"), "{err}");
}

#[test]
fn half_precision_compute_stays_close() {
    // f16 compute (norms and softmax upcast inside) on the fp16-stored case: a loose check that
    // nothing overflows or drifts, not a parity claim.
    let dir = fixtures_dir().join("vae/tiny_b");
    let vae =
        AutoencoderKL::load(&dir.join("vae"), Some("fp16"), DType::F16, &Device::Cpu).unwrap();
    let fx = Fixture::load(&dir.join("activations.safetensors"));
    let mean = vae.encode_mean(&fx.tensor("encode.in")).unwrap();
    assert_eq!(mean.dtype(), DType::F16);
    assert_close(
        "tiny_b f16 encode mean",
        &mean,
        &fx.tensor("encode.mean"),
        1e-2,
    );
    let out = vae.decode(&fx.tensor("decode.in")).unwrap();
    assert_close("tiny_b f16 decode", &out, &fx.tensor("decode.out"), 1e-2);
}
