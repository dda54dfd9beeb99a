//! The `vivify` binary end to end: check-model and denoise on the built-in and fixture models.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vivify(args: &[&str]) -> Output {
    vivify_env(args, &[])
}

/// Runs vivify with extra environment variables (and no Hugging Face settings from outside).
fn vivify_env(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vivify"));
    for var in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
        "HF_HUB_OFFLINE",
        "HF_TOKEN",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("vivify runs")
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
fn check_model_checks_a_component_dir_and_lists_problems_of_a_bad_model() {
    let out = vivify(&["check-model", fixture_unet().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("524568 parameters): ok"),
        "{}",
        text(&out)
    );

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
        report.contains("missing tensor conv_out.weight (expected shape [4, 8, 3, 3])"),
        "{report}"
    );
    assert!(report.contains("unexpected tensor bogus"), "{report}");
    // The other components are missing from this model dir: each is reported.
    assert!(report.contains("no `text_encoder` component"), "{report}");
    assert!(
        report.contains("no diffusion_pytorch_model[.fp16].safetensors weights"),
        "{report}"
    );
}

fn input_image() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/image/src_wide.png")
}

/// `generate --model tiny` on the fixture image at a small size, plus `extra` flags.
fn generate_tiny(output: &Path, extra: &[&str]) -> Output {
    let image = input_image();
    let base = [
        "generate",
        "--model",
        "tiny",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "a red balloon",
        "--width",
        "32",
        "--height",
        "24",
        "--frames",
        "3",
        "--steps",
        "2",
        "--output",
        output.to_str().unwrap(),
    ];
    vivify(&[&base[..], extra].concat())
}

#[test]
fn generate_tiny_writes_frames_deterministically() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    // In a directory that does not exist yet: generate makes it.
    let la = dir.path().join("latents").join("a.safetensors");
    let out = generate_tiny(
        &a,
        &["--seed", "7", "--output-latents", la.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("denoise done"), "{}", text(&out));
    // Not a terminal: progress comes as one line per step.
    for step in ["step 1/2:", "step 2/2:"] {
        assert!(text(&out).contains(step), "{}", text(&out));
    }
    let out = generate_tiny(&b, &["--seed", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    for i in 0..3 {
        let name = format!("{i:04}.png");
        let (fa, fb) = (
            std::fs::read(a.join(&name)).unwrap(),
            std::fs::read(b.join(&name)).unwrap(),
        );
        assert_eq!(fa, fb, "frame {name} differs between identical runs");
        let img = image::open(a.join(&name)).unwrap();
        assert_eq!((img.width(), img.height()), (32, 24));
    }
    assert!(!a.join("0003.png").exists());
    assert_eq!(read_latents(&la).dims(), &[1, 4, 3, 3, 4]);

    // --latents replaces the seeded noise.
    let c = dir.path().join("c");
    let lc = dir.path().join("c.safetensors");
    let out = generate_tiny(
        &c,
        &[
            "--seed",
            "7",
            "--latents",
            la.to_str().unwrap(),
            "--output-latents",
            lc.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let diff = (&read_latents(&lc) - &read_latents(&la))
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
fn generate_rejects_bad_input_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let corrupt = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let bmp = dir.path().join("image.bmp");
    std::fs::write(&bmp, b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0").unwrap();
    let missing = dir.path().join("missing.png");
    let no_model = dir.path().join("nope");
    let wrong_latents = dir.path().join("wrong.safetensors");
    let t = candle_core::Tensor::zeros(
        (1, 4, 2, 2, 2),
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )
    .unwrap();
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("latents".to_string(), t)]),
        &wrong_latents,
    )
    .unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--width", "36"], "`width`"),
        (vec!["--height", "8"], "`height`"),
        (vec!["--width", "8192"], "`width`"),
        (vec!["--frames", "1"], "`frames`"),
        (vec!["--steps", "0"], "`steps`"),
        (vec!["--guidance", "-1"], "`guidance`"),
        (vec!["--plan", "ff-chunk=0"], "a chunk must be at least 1"),
        (vec!["--plan", "warp=9"], "unknown key"),
        (vec!["--resume", missing.to_str().unwrap()], "missing.png"),
        (
            vec!["--dtype", "bf16"],
            "bf16 compute is not available on the CPU",
        ),
        (vec!["--device", "cuda"], "no CUDA support"),
        (vec!["--image", missing.to_str().unwrap()], "missing.png"),
        (vec!["--image", corrupt.to_str().unwrap()], "`image`"),
        (vec!["--image", bmp.to_str().unwrap()], "`image`"),
        (
            vec!["--model", no_model.to_str().unwrap()],
            "no such directory",
        ),
        (
            vec!["--latents", wrong_latents.to_str().unwrap()],
            "expected [1, 4, 3, 3, 4]",
        ),
        (vec!["--playback-fps", "0"], "--playback-fps"),
        (vec!["--quality", "52"], "--quality"),
    ];
    for (extra, expected) in cases {
        let out = generate_tiny(&out_dir, &extra);
        let report = text(&out);
        assert!(!out.status.success(), "{extra:?} was accepted");
        assert!(report.contains(expected), "{extra:?}: {report}");
        assert!(!report.contains("panicked"), "{extra:?} panicked: {report}");
    }
}

#[test]
fn generate_tiny_writes_mp4_and_gif_with_sidecars() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        (
            "clip.mp4",
            vec![
                "--fps",
                "8",
                "--quality",
                "18",
                "--plan",
                "attention-query-chunk=5",
                "--plan",
                "sequential-guidance=true",
            ],
        ),
        ("clip.gif", vec!["--playback-fps", "12.5", "--gif-dither"]),
    ] {
        let path = dir.path().join(name);
        let out = generate_tiny(&path, &extra);
        assert!(out.status.success(), "{name}: {}", text(&out));
        let bytes = std::fs::read(&path).unwrap();
        match name {
            "clip.mp4" => assert_eq!(&bytes[4..8], b"ftyp"),
            _ => assert_eq!(&bytes[..6], b"GIF89a"),
        }
        let sidecar = dir.path().join(format!("{name}.json"));
        let meta = vivify_video::Metadata::read(&sidecar).unwrap();
        assert_eq!(meta.prompt, "a red balloon");
        assert_eq!(meta.model.id, "tiny");
        assert_eq!(meta.model.revision, "main");
        assert_eq!(meta.parameters.frames, 3);
        assert_eq!(meta.parameters.steps, 2);
        assert_eq!(meta.vivify_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(meta.plan["dtype"], "f32");
        assert!(
            meta.plan["step_downs"].as_array().unwrap().is_empty(),
            "{meta:?}"
        );
        if name == "clip.mp4" {
            // --plan choices reach the run and its record.
            let plan = &meta.plan["execution_plan"]["plan"];
            assert_eq!(plan["compute"]["attention_query_chunk"], 5, "{meta:?}");
            assert_eq!(plan["sequential_guidance"], true, "{meta:?}");
        }
        assert!(
            meta.timings.iter().any(|t| t.stage == "denoise"),
            "{meta:?}"
        );
        if name == "clip.gif" {
            // --playback-fps leaves the model's conditioning at its default.
            assert_eq!(meta.parameters.playback_fps, 12.5);
            assert_eq!(meta.parameters.fps, 16);
            assert_eq!(meta.output.settings["dither"], true);
        } else {
            assert_eq!(meta.parameters.playback_fps, 8.0);
            assert_eq!(meta.parameters.fps, 8);
            assert_eq!(meta.output.settings["qp"], 18);
        }
    }
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

fn pipeline_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pipeline")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn generate_fixture_model(
    model: &str,
    output: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Output {
    let image = pipeline_fixture().join("input.png");
    let base = [
        "generate",
        "--model",
        model,
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "a fox",
        "--width",
        "64",
        "--height",
        "48",
        "--frames",
        "3",
        "--steps",
        "2",
        "--output",
        output.to_str().unwrap(),
    ];
    vivify_env(&[&base[..], extra].concat(), env)
}

#[test]
fn hub_model_resolves_offline_from_the_huggingface_cache() {
    // A cache laid out as huggingface_hub leaves it: refs/main -> snapshots/<commit>/.
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--test-org--tiny-i2v");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    copy_dir(
        &pipeline_fixture().join("model"),
        &repo.join("snapshots").join(commit),
    );
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();

    let out_dir = cache.path().join("frames");
    let env = [("HF_HUB_CACHE", cache.path())];
    let out = generate_fixture_model("test-org/tiny-i2v", &out_dir, &["--offline"], &env);
    assert!(out.status.success(), "{}", text(&out));
    assert!(out_dir.join("0002.png").is_file());

    // `download` prints the snapshot it resolved to.
    let out = vivify_env(
        &["download", "--model", "test-org/tiny-i2v", "--offline"],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .ends_with(commit),
        "{}",
        text(&out)
    );

    // A repo the cache does not have: offline mode says so instead of trying the network.
    let out = generate_fixture_model("test-org/absent", &out_dir, &["--offline"], &env);
    assert!(!out.status.success());
    assert!(
        text(&out).to_lowercase().contains("offline"),
        "{}",
        text(&out)
    );
}

#[test]
fn unreachable_hub_is_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    // Port 9 (discard) on loopback: nothing listens there.
    let endpoint = Path::new("http://127.0.0.1:9");
    let env = [("HF_HUB_CACHE", cache.path()), ("HF_ENDPOINT", endpoint)];
    let out = generate_fixture_model("test-org/tiny-i2v", &cache.path().join("f"), &[], &env);
    let report = text(&out);
    assert!(!out.status.success(), "{report}");
    assert!(
        report.contains("127.0.0.1:9") && !report.contains("panicked"),
        "{report}"
    );
}

#[test]
fn broken_model_directories_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("frames");
    type Breakage = fn(&Path);
    let cases: [(&str, Breakage, &str); 3] = [
        (
            "truncated weights",
            |m| {
                let f = m.join("unet/diffusion_pytorch_model.fp16.safetensors");
                let bytes = std::fs::read(&f).unwrap();
                std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
            },
            "truncated: tensor",
        ),
        (
            "wrong config",
            |m| {
                std::fs::write(
                    m.join("vae/config.json"),
                    r#"{"block_out_channels": "many"}"#,
                )
                .unwrap();
            },
            "vae/config.json",
        ),
        (
            "missing component",
            |m| {
                std::fs::remove_dir_all(m.join("text_encoder")).unwrap();
            },
            "text_encoder",
        ),
    ];
    for (what, break_it, expected) in cases {
        let model = dir.path().join(what.replace(' ', "_"));
        copy_dir(&pipeline_fixture().join("model"), &model);
        break_it(&model);
        let out = generate_fixture_model(model.to_str().unwrap(), &out_dir, &[], &[]);
        let report = text(&out);
        assert!(!out.status.success(), "{what} was accepted");
        assert!(
            report.contains(expected) && !report.contains("panicked"),
            "{what}: {report}"
        );
    }
}

#[test]
fn plan_predicts_and_chooses_within_a_budget() {
    let args = [
        "plan", "--width", "512", "--height", "512", "--frames", "16", "--json",
    ];
    let out = vivify(&[&args[..], &["--memory-budget", "24GiB"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["fits"], true, "{record}");
    let (peak, budget) = (
        record["predicted_peak_bytes"].as_u64().unwrap(),
        record["budget_bytes"].as_u64().unwrap(),
    );
    assert!(peak <= budget, "{record}");
    assert!(record["plan"]["compute"].is_object(), "{record}");

    // Far too little: says so, with a non-zero status.
    let out = vivify(&[&args[..], &["--memory-budget", "1GiB"]].concat());
    assert!(!out.status.success());
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["fits"], false, "{record}");

    let out = vivify(&[&args[..], &["--memory-budget", "lots"]].concat());
    assert!(
        !out.status.success() && text(&out).contains("memory-budget"),
        "{}",
        text(&out)
    );
}

/// The peak the planner predicts for the tiny model's 32x24x3 run (guided, f32, CPU kernels)
/// with the plain plan and with the most frugal one.
fn tiny_plain_and_frugal_peaks() -> (u64, u64) {
    use vivify_core::memory::{Backend, ModelConfigs, RequestShape, estimate_for};
    let m = vivify_core::weights::tiny_models(candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let models = ModelConfigs {
        unet: m.unet.config.clone(),
        vae: m.vae.config.clone(),
        text: m.text_encoder.config.clone(),
        vision: m.image_encoder.config.clone(),
    };
    let shape = RequestShape {
        width: 32,
        height: 24,
        frames: 3,
        guidance: true,
        decode_chunk: 3,
    };
    let peak = |plan, decode_chunk| {
        let r = RequestShape {
            decode_chunk,
            ..shape
        };
        estimate_for(&models, &r, &plan, candle_core::DType::F32, Backend::Cpu)
            .unwrap()
            .peak()
    };
    let (frugal, dc) = vivify_core::memory::planner::frugal_plan(&shape);
    (peak(Default::default(), 3), peak(frugal, dc))
}

#[test]
fn generate_asks_the_planner_and_flags_override_its_choices() {
    let dir = tempfile::tempdir().unwrap();
    // Plenty of memory: the plain plan, all frames decoded at once.
    let roomy = dir.path().join("roomy");
    let out = generate_tiny(&roomy, &["--memory-budget", "64GiB"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("plan: plain dc3"), "{}", text(&out));
    let meta = vivify_video::Metadata::read(&roomy.join("metadata.json")).unwrap();
    assert_eq!(meta.plan["planner"]["chosen"], "plain dc3", "{meta:?}");
    assert_eq!(meta.plan["planner"]["fits"], true, "{meta:?}");
    assert_eq!(meta.parameters.decode_chunk, 3);

    // A budget between the frugal and the plain plan's peaks: a low-memory plan that fits.
    let (plain, frugal) = tiny_plain_and_frugal_peaks();
    assert!(frugal < plain, "{frugal} vs {plain}");
    let budget = ((frugal + (plain - frugal) / 4) as f64 / 0.95) as u64 + 1;
    let tight = dir.path().join("tight");
    let out = generate_tiny(&tight, &["--memory-budget", &budget.to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    let meta = vivify_video::Metadata::read(&tight.join("metadata.json")).unwrap();
    let planner = &meta.plan["planner"];
    assert_eq!(planner["fits"], true, "{meta:?}");
    assert_eq!(planner["budget_bytes"], budget, "{meta:?}");
    assert!(planner["predicted_peak_bytes"].as_u64().unwrap() <= budget);
    let chosen = planner["chosen"].as_str().unwrap();
    assert_ne!(chosen, "plain dc3", "{meta:?}");
    assert!(
        text(&out).contains(&format!("plan: {chosen}")),
        "{}",
        text(&out)
    );
    assert_ne!(
        meta.plan["execution_plan"]["plan"],
        serde_json::to_value(vivify_core::pipeline::plan::ExecutionPlan::default()).unwrap()
    );

    // --plan and --decode-chunk set single choices over the planner's.
    let manual = dir.path().join("manual");
    let out = generate_tiny(
        &manual,
        &[
            "--memory-budget",
            "64GiB",
            "--plan",
            "conv-frame-chunk=2",
            "--decode-chunk",
            "1",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("plan: cf2 dc1 (planner chose plain dc3"),
        "{}",
        text(&out)
    );
    let meta = vivify_video::Metadata::read(&manual.join("metadata.json")).unwrap();
    assert_eq!(
        meta.plan["execution_plan"]["plan"]["compute"]["conv_frame_chunk"],
        2
    );
    assert_eq!(meta.parameters.decode_chunk, 1);

    // Without --memory-budget the CPU plans for its available memory.
    let auto = dir.path().join("auto");
    let out = generate_tiny(&auto, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let meta = vivify_video::Metadata::read(&auto.join("metadata.json")).unwrap();
    assert_eq!(
        meta.plan["planner"]["budget_from"], "free memory",
        "{meta:?}"
    );
}

#[test]
fn doctor_reports_the_device_the_model_and_what_fits() {
    let out = vivify(&["doctor", "--model", "tiny"]);
    assert!(out.status.success(), "{}", text(&out));
    let report = text(&out);
    for expected in [
        "cpu:",
        "RAM",
        "cuda:",
        "model: tiny",
        "budget:",
        "512x512x16",
        "768x768x24",
        "1280x704x16",
        "1024x1024x32",
    ] {
        assert!(report.contains(expected), "{expected}: {report}");
    }

    // The published model at a fixed budget, as JSON: every preset with a plan; the 16 GiB
    // figures are the planner's for the published configs.
    let out = vivify(&[
        "doctor",
        "--json",
        "--dtype",
        "f16",
        "--memory-budget",
        "16GiB",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["model"], "ali-vilab/i2vgen-xl");
    assert_eq!(record["budget_bytes"], 16u64 << 30);
    assert_eq!(record["cuda"]["built_with_cuda"], false);
    assert!(record["cpu"]["total_bytes"].as_u64().unwrap_or(1) > 0);
    let presets = record["presets"].as_array().unwrap();
    assert_eq!(presets.len(), 4, "{record}");
    for p in presets {
        assert!(p["plan"].as_str().is_some_and(|s| !s.is_empty()), "{p}");
        assert!(p["slowdown"].as_f64().unwrap() >= 1.0, "{p}");
        if p["fits"] == true {
            assert!(
                p["predicted_peak_bytes"].as_u64().unwrap() <= 16u64 << 30,
                "{p}"
            );
        }
    }
    assert_eq!(presets[0]["width"], 512);
    assert_eq!(presets[0]["fits"], true, "{record}");
}

/// 768x768x24 and 1280x704x16 fit an 8 GiB card with the published model (frame-chunked
/// convolutions, pixel-chunked temporal layers, VAE row bands).
#[test]
fn plan_fits_the_mid_presets_in_8_gib() {
    for (w, h, f) in [("768", "768", "24"), ("1280", "704", "16")] {
        let out = vivify(&[
            "plan",
            "--width",
            w,
            "--height",
            h,
            "--frames",
            f,
            "--memory-budget",
            "8GiB",
            "--json",
        ]);
        assert!(out.status.success(), "{w}x{h}x{f}: {}", text(&out));
        let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(record["fits"], true, "{record}");
        assert!(record["predicted_peak_bytes"].as_u64().unwrap() <= 8 << 30);
    }
}

/// 1024x1024x32 fits an 8 GiB card with the published model once the encoders are freed before
/// denoising and the UNet before decoding (staged residency).
#[test]
fn plan_fits_1024p_32_frames_in_8_gib_with_staged_weights() {
    let args = [
        "plan",
        "--width",
        "1024",
        "--height",
        "1024",
        "--frames",
        "32",
        "--memory-budget",
        "8GiB",
        "--json",
    ];
    let out = vivify(&args);
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["fits"], true, "{record}");
    assert!(record["predicted_peak_bytes"].as_u64().unwrap() <= 8 << 30);
    assert_ne!(record["plan"]["residency"], "all_resident", "{record}");
    let summary = record["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("staged") || summary.starts_with("stream"),
        "{summary}"
    );
    // Each stage holds its own models only: decoding holds no UNet.
    let decode_weights = record["stages"]["decode"]["weights_bytes"]
        .as_u64()
        .unwrap();
    let denoise_weights = record["stages"]["denoise"]["weights_bytes"]
        .as_u64()
        .unwrap();
    assert!(decode_weights * 10 < denoise_weights, "{record}");

    // The same plan with every model resident does not fit; --plan sets the residency.
    let out = vivify(&[&args[..], &["--plan", "residency=all"]].concat());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(record["fits"], false, "{record}");
    assert_eq!(record["plan"]["residency"], "all_resident", "{record}");
    let out = vivify(&[&args[..], &["--plan", "residency=streamed:1"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let record: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        record["plan"]["residency"]["streamed_unet"]["resident_blocks"], 1,
        "{record}"
    );
    let out = vivify(&[&args[..], &["--plan", "residency=sometimes"]].concat());
    assert!(!out.status.success() && text(&out).contains("residency"));
}

/// `--plan residency=` reaches a tiny run and its record; the frames are those of an
/// all-resident run.
#[test]
fn generate_runs_staged_and_streamed_with_the_same_frames() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, residency: &str| {
        let path = dir.path().join(name);
        let out = generate_tiny(
            &path,
            &["--seed", "3", "--plan", &format!("residency={residency}")],
        );
        assert!(out.status.success(), "{residency}: {}", text(&out));
        let meta = vivify_video::Metadata::read(&path.join("metadata.json")).unwrap();
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|i| std::fs::read(path.join(format!("{i:04}.png"))).unwrap())
            .collect();
        (meta, frames)
    };
    let (meta, resident) = run("all", "all");
    assert_eq!(
        meta.plan["execution_plan"]["plan"]["residency"], "all_resident",
        "{meta:?}"
    );
    let (meta, staged) = run("staged", "staged");
    assert_eq!(
        meta.plan["execution_plan"]["plan"]["residency"], "staged",
        "{meta:?}"
    );
    assert!(staged == resident, "staged frames differ");
    let (meta, streamed) = run("streamed", "streamed");
    assert_eq!(
        meta.plan["execution_plan"]["plan"]["residency"]["streamed_unet"]["resident_blocks"], 2,
        "{meta:?}"
    );
    assert!(streamed == resident, "streamed frames differ");
}

/// An all-resident run that runs out of memory past every chunking rung frees its models and
/// steps down to staged, then streamed weights, ending with the frames of an all-resident run
/// at the same chunking.
#[test]
fn generate_steps_an_all_resident_run_down_to_streamed_weights() {
    let dir = tempfile::tempdir().unwrap();
    let chunked = [
        "sequential-guidance=true",
        "attention-query-chunk=1024",
        "attention-head-chunk=1",
        "ff-chunk=1024",
        "frame-chunk=1",
        "pixel-chunk=1024",
        "conv-frame-chunk=1",
    ];
    let plan_args = |residency: &str| -> Vec<String> {
        let mut args = vec!["--seed".into(), "3".into()];
        for setting in chunked.iter().copied().chain([residency]) {
            args.extend(["--plan".into(), setting.to_string()]);
        }
        args
    };
    let frames = |path: &Path| -> Vec<Vec<u8>> {
        (0..3)
            .map(|i| std::fs::read(path.join(format!("{i:04}.png"))).unwrap())
            .collect()
    };
    let reference = dir.path().join("reference");
    let args = plan_args("residency=all");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = generate_tiny(&reference, &args);
    assert!(out.status.success(), "{}", text(&out));

    // Far more rungs than the ladder has: denoising fits only at its bottom.
    let stepped = dir.path().join("stepped");
    let out = generate_tiny(
        &stepped,
        &[&args[..], &["--simulate-denoise-oom", "99"]].concat(),
    );
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    for step_down in [
        "denoise: out of memory, model weights all resident -> model weights staged",
        "denoise: out of memory, UNet weights staged -> UNet weights streamed:2",
        "denoise: out of memory, UNet weights streamed:2 -> UNet weights streamed:1",
    ] {
        assert!(report.contains(step_down), "{step_down}: {report}");
    }
    let meta = vivify_video::Metadata::read(&stepped.join("metadata.json")).unwrap();
    assert_eq!(
        meta.plan["execution_plan"]["plan"]["residency"]["streamed_unet"]["resident_blocks"], 1,
        "{meta:?}"
    );
    assert_eq!(
        meta.plan["step_downs"].as_array().unwrap().len(),
        3,
        "{meta:?}"
    );
    assert!(
        frames(&stepped) == frames(&reference),
        "stepped-down frames differ"
    );
}
