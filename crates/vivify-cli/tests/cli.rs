//! The `vivify` binary end to end: check-model and denoise on the built-in and fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vivify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vivify"))
        .args(args)
        .output()
        .expect("vivify runs")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fixture_unet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/unet/tiny_b/unet")
}

fn read_latents(path: &Path) -> candle_core::Tensor {
    let mut t = candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap();
    t.remove("latents").expect("tensor `latents`")
}

#[test]
fn check_model_accepts_a_good_unet_and_lists_problems_of_a_bad_one() {
    let out = vivify(&["check-model", fixture_unet().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("933656 parameters"), "{}", text(&out));

    // A model dir whose UNet lost a tensor and gained another.
    let dir = tempfile::tempdir().unwrap();
    let unet = dir.path().join("unet");
    std::fs::create_dir(&unet).unwrap();
    std::fs::copy(fixture_unet().join("config.json"), unet.join("config.json")).unwrap();
    let weights = fixture_unet().join("diffusion_pytorch_model.fp16.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    tensors.remove("conv_out.weight");
    tensors.insert(
        "bogus".into(),
        candle_core::Tensor::zeros(2, candle_core::DType::F16, &candle_core::Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(
        &tensors,
        unet.join("diffusion_pytorch_model.fp16.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("model_index.json"),
        r#"{"_class_name": "I2VGenXLPipeline", "unet": ["diffusers", "I2VGenXLUNet"], "vae": ["diffusers", "AutoencoderKL"]}"#,
    )
    .unwrap();
    let out = vivify(&["check-model", dir.path().to_str().unwrap()]);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("missing tensor conv_out.weight (expected shape [4, 16, 3, 3])"),
        "{report}"
    );
    assert!(report.contains("unexpected tensor bogus"), "{report}");
    assert!(
        report.contains("vae (AutoencoderKL): not checked"),
        "{report}"
    );
}

#[test]
fn denoise_tiny_is_deterministic_and_honours_latents() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    let c = dir.path().join("c.safetensors");
    let common = [
        "denoise", "--model", "tiny", "--width", "32", "--height", "24", "--frames", "3",
        "--steps", "2",
    ];
    for path in [&a, &b] {
        let out = vivify(
            &[
                &common[..],
                &["--seed", "7", "--output-latents", path.to_str().unwrap()],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let (la, lb) = (read_latents(&a), read_latents(&b));
    assert_eq!(la.dims(), &[1, 4, 3, 3, 4]);
    let diff = (&la - &lb)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0, "same seed, same output");

    // --latents replaces the seeded noise: feeding a's output as the start changes the result.
    let out = vivify(
        &[
            &common[..],
            &[
                "--seed",
                "7",
                "--latents",
                a.to_str().unwrap(),
                "--output-latents",
                c.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let diff = (&read_latents(&c) - &la)
        .unwrap()
        .abs()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff > 0.0);
}

#[test]
fn denoise_rejects_bad_input_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("x.safetensors");
    let out_str = out_path.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--width", "30"],
            "--width 30: must be a positive multiple of 8",
        ),
        (&["--frames", "1"], "--frames 1: must be at least 2"),
        (&["--steps", "0"], "`steps`"),
        (
            &["--dtype", "bf16"],
            "bf16 compute is not available on the CPU",
        ),
        (&["--device", "cuda"], "no CUDA support"),
    ];
    for (extra, expected) in cases {
        let base = [
            "denoise",
            "--model",
            "tiny",
            "--width",
            "32",
            "--height",
            "32",
            "--frames",
            "2",
            "--steps",
            "2",
            "--output-latents",
            out_str,
        ];
        let out = vivify(&[&base[..], extra].concat());
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(text(&out).contains(expected), "{extra:?}: {}", text(&out));
    }
    // Initial latents of the wrong shape name the expected one.
    let wrong = dir.path().join("wrong.safetensors");
    let t = candle_core::Tensor::zeros(
        (1, 4, 2, 2, 2),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), t)]),
        &wrong,
    )
    .unwrap();
    let out = vivify(&[
        "denoise",
        "--model",
        "tiny",
        "--width",
        "32",
        "--height",
        "32",
        "--frames",
        "2",
        "--steps",
        "2",
        "--latents",
        wrong.to_str().unwrap(),
        "--output-latents",
        out_str,
    ]);
    assert!(
        text(&out).contains("expected [1, 4, 2, 4, 4]"),
        "{}",
        text(&out)
    );
}

#[test]
fn bench_unet_prints_one_json_record() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/unet/tiny_a/unet/config.json");
    let out = vivify(&[
        "bench-unet",
        "--config",
        config.to_str().unwrap(),
        "--width",
        "32",
        "--height",
        "32",
        "--frames",
        "2",
        "--iters",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["params"], 283512);
    assert_eq!(record["impl"], "vivify");
    assert!(record["sec_median"].as_f64().unwrap() > 0.0);
    let out = vivify(&[
        "bench-unet",
        "--config",
        config.to_str().unwrap(),
        "--iters",
        "0",
    ]);
    assert!(text(&out).contains("--iters must be at least 1"));
}
