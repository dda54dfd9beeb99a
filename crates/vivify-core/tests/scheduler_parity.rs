//! DDIM scheduler parity against diffusers 0.42.1 (fixtures from
//! `tools/parity/scheduler_fixtures.py`) plus unit tests of the public API.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use vivify_core::Error;
use vivify_core::scheduler::{
    BetaSchedule, DdimConfig, DdimScheduler, PredictionType, TimestepSpacing,
};

/// Per step: ||ours - reference||_2 / ||reference||_2 must stay below this.
///
/// Not zero because torch's CPU float32 `sqrt` (MKL) is off by one ulp for
/// about 0.5% of inputs while the port uses IEEE `sqrt`; the `ieee_sqrt`
/// fixtures pin the rest of the arithmetic bit for bit.
const STEP_TOL: f64 = 1e-6;
/// Per element relative error of `alphas_cumprod`.
const ALPHAS_TOL: f64 = 1e-6;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/scheduler")
}

struct Fixtures {
    f32s: HashMap<String, (Vec<usize>, Vec<f32>)>,
    i64s: HashMap<String, Vec<i64>>,
    index: serde_json::Value,
}

impl Fixtures {
    fn load() -> Self {
        let dir = fixture_dir();
        let bytes = std::fs::read(dir.join("ddim_parity.safetensors"))
            .expect("read ddim_parity.safetensors (run tools/parity/scheduler_fixtures.py)");
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse safetensors");
        let mut f32s = HashMap::new();
        let mut i64s = HashMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            match view.dtype() {
                safetensors::Dtype::F32 => {
                    let v = data
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    f32s.insert(name, (view.shape().to_vec(), v));
                }
                safetensors::Dtype::I64 => {
                    let v = data
                        .chunks_exact(8)
                        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    i64s.insert(name, v);
                }
                other => panic!("unexpected dtype {other:?} for {name}"),
            }
        }
        let index = serde_json::from_str(
            &std::fs::read_to_string(dir.join("ddim_parity.json")).expect("read ddim_parity.json"),
        )
        .expect("parse ddim_parity.json");
        Self { f32s, i64s, index }
    }

    fn f32(&self, name: &str) -> &(Vec<usize>, Vec<f32>) {
        self.f32s
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
    }

    fn i64(&self, name: &str) -> &[i64] {
        self.i64s
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name} missing"))
    }

    fn shape(&self) -> Vec<usize> {
        self.index["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect()
    }

    /// Row `i` of a `[STEPS, *shape]` tensor, as a tensor of `shape`.
    fn row(&self, name: &str, i: usize) -> Tensor {
        let shape = self.shape();
        let (_, v) = self.f32(name);
        let n: usize = shape.iter().product();
        Tensor::from_vec(v[i * n..(i + 1) * n].to_vec(), shape, &Device::Cpu).unwrap()
    }

    fn whole(&self, name: &str) -> Tensor {
        let (shape, v) = self.f32(name);
        Tensor::from_vec(v.clone(), shape.clone(), &Device::Cpu).unwrap()
    }
}

/// max |a - b| / max |b|.
fn rel_max_err(ours: &Tensor, reference: &Tensor) -> f64 {
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let scale = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    if diff == 0.0 { 0.0 } else { diff / scale }
}

/// ||a - b||_2 / ||b||_2.
fn rel_norm_err(ours: &Tensor, reference: &Tensor) -> f64 {
    let a = ours.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let diff: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    if diff == 0.0 {
        0.0
    } else {
        (diff / norm).sqrt()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

struct RunErrors {
    /// Worst per-step relative L2 error.
    max_step_err: f64,
    worst_step: usize,
    /// Worst per-step max |diff| / max |reference|, for the report.
    max_step_maxabs_err: f64,
    pred_first_err: f64,
    pred_last_err: f64,
    final_sample: Tensor,
}

/// Runs one combo's 50-step trajectory, feeding our own outputs forward.
fn run_combo(fx: &Fixtures, combo: &serde_json::Value, eta: f64) -> RunErrors {
    let cfg_json = combo["config_json"].as_str().unwrap();
    let config: DdimConfig = serde_json::from_str(cfg_json).expect("parse combo config");
    let prefix = format!(
        "{}/{}/{}",
        combo["config"].as_str().unwrap(),
        combo["spacing"].as_str().unwrap(),
        combo["eta_key"].as_str().unwrap()
    );
    let mut sched = DdimScheduler::new(config).unwrap();
    let steps = fx.index["steps"].as_u64().unwrap() as usize;
    let timesteps = sched.set_timesteps(steps).unwrap();
    assert_eq!(
        timesteps,
        fx.i64(combo["timesteps_key"].as_str().unwrap()),
        "{prefix}: timesteps"
    );
    let mut x = fx.whole("sample0");
    let mut errs = RunErrors {
        max_step_err: 0.0,
        worst_step: 0,
        max_step_maxabs_err: 0.0,
        pred_first_err: 0.0,
        pred_last_err: 0.0,
        final_sample: x.clone(),
    };
    for (i, &t) in timesteps.iter().enumerate() {
        let model_output = fx.row("model_outputs", i);
        let noise = fx.row("variance_noise", i);
        let noise = (eta > 0.0).then_some(&noise);
        let out = sched.step_full(&model_output, t, &x, eta, noise).unwrap();
        let reference = fx.row(&format!("{prefix}/prev_samples"), i);
        let err = rel_norm_err(&out.prev_sample, &reference);
        if err > errs.max_step_err {
            errs.max_step_err = err;
            errs.worst_step = i;
        }
        errs.max_step_maxabs_err = errs
            .max_step_maxabs_err
            .max(rel_max_err(&out.prev_sample, &reference));
        if i == 0 {
            errs.pred_first_err = rel_norm_err(
                &out.pred_original_sample,
                &fx.whole(&format!("{prefix}/pred_original_first")),
            );
        }
        if i + 1 == timesteps.len() {
            errs.pred_last_err = rel_norm_err(
                &out.pred_original_sample,
                &fx.whole(&format!("{prefix}/pred_original_last")),
            );
        }
        x = out.prev_sample;
    }
    errs.final_sample = x;
    errs
}

fn combos(fx: &Fixtures) -> &Vec<serde_json::Value> {
    fx.index["combos"].as_array().unwrap()
}

#[test]
fn parity_tables_match_diffusers() {
    let fx = Fixtures::load();
    let configs = fx.index["configs"].as_object().unwrap();
    assert_eq!(configs.len(), 5);
    for (name, cfg) in configs {
        let config: DdimConfig = serde_json::from_value(cfg.clone()).unwrap();
        let sched = DdimScheduler::new(config).unwrap();

        let (_, betas) = fx.f32(&format!("{name}/betas"));
        assert_eq!(sched.betas().len(), betas.len());
        let beta_mismatches = sched
            .betas()
            .iter()
            .zip(betas)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();

        let (_, reference) = fx.f32(&format!("{name}/alphas_cumprod"));
        assert_eq!(sched.alphas_cumprod().len(), reference.len());
        let mut max_rel = 0.0f64;
        let mut mismatches = 0;
        for (i, (&a, &r)) in sched.alphas_cumprod().iter().zip(reference).enumerate() {
            if a.to_bits() != r.to_bits() {
                mismatches += 1;
            }
            let rel = if a == r {
                0.0
            } else {
                ((a as f64 - r as f64) / r as f64).abs()
            };
            assert!(
                rel <= ALPHAS_TOL,
                "{name}: alphas_cumprod[{i}] = {a:e}, diffusers {r:e} (rel {rel:e})"
            );
            max_rel = max_rel.max(rel);
        }
        // With IEEE square roots diffusers' tables are reproduced bit for bit.
        for table in ["betas", "alphas_cumprod"] {
            let (_, exact) = fx.f32(&format!("ieee_sqrt/{name}/{table}"));
            let ours = if table == "betas" {
                sched.betas()
            } else {
                sched.alphas_cumprod()
            };
            let ours: Vec<u32> = ours.iter().map(|v| v.to_bits()).collect();
            let exact: Vec<u32> = exact.iter().map(|v| v.to_bits()).collect();
            assert_eq!(
                ours, exact,
                "{name}: {table} differ from ieee_sqrt reference"
            );
        }
        let (_, fin) = fx.f32(&format!("{name}/final_alpha_cumprod"));
        assert_eq!(
            sched.final_alpha_cumprod(),
            fin[0],
            "{name}: final_alpha_cumprod"
        );
        println!(
            "{name}: betas bit-mismatches {beta_mismatches}/1000, alphas_cumprod bit-mismatches \
             {mismatches}/1000, max rel err {max_rel:e}"
        );
    }
}

#[test]
fn parity_timesteps_match_numpy() {
    let fx = Fixtures::load();
    let mut checked = 0;
    for (key, reference) in &fx.i64s {
        let Some(rest) = key.strip_prefix("timesteps/") else {
            continue;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let spacing: TimestepSpacing =
            serde_json::from_value(serde_json::Value::String(parts[0].into())).unwrap();
        let offset: i64 = parts[1].strip_prefix("offset").unwrap().parse().unwrap();
        let count: usize = parts[2].strip_prefix('n').unwrap().parse().unwrap();
        let mut sched = DdimScheduler::new(DdimConfig {
            timestep_spacing: spacing,
            steps_offset: offset,
            ..DdimConfig::default()
        })
        .unwrap();
        let ours = sched.set_timesteps(count).unwrap();
        assert_eq!(&ours, reference, "{key}");
        assert_eq!(sched.timesteps(), reference.as_slice(), "{key}");
        checked += 1;
    }
    // 3 spacings x offsets {0, 1} x 8 step counts.
    assert_eq!(checked, 48);
}

#[test]
fn parity_step_trajectories_match_diffusers() {
    let fx = Fixtures::load();
    let mut failures = Vec::new();
    let mut overall: f64 = 0.0;
    let mut overall_maxabs: f64 = 0.0;
    let mut exact = 0;
    for combo in combos(&fx) {
        let name = format!(
            "{}/{}/{}",
            combo["config"].as_str().unwrap(),
            combo["spacing"].as_str().unwrap(),
            combo["eta_key"].as_str().unwrap()
        );
        let eta = combo["eta"].as_f64().unwrap();
        let e = run_combo(&fx, combo, eta);
        let ieee = bits(&fx.whole(&format!("ieee_sqrt/{name}/final_sample")));
        let ieee_exact = bits(&e.final_sample) == ieee;
        println!(
            "{name:34} step err: rel-L2 {:.3e} (step {:2}), max-abs {:.3e}; pred_x0 first {:.3e}, \
             last {:.3e}; bit-exact vs ieee_sqrt: {ieee_exact}",
            e.max_step_err, e.worst_step, e.max_step_maxabs_err, e.pred_first_err, e.pred_last_err
        );
        overall = overall.max(e.max_step_err);
        overall_maxabs = overall_maxabs.max(e.max_step_maxabs_err);
        exact += usize::from(ieee_exact);
        if e.max_step_err > STEP_TOL
            || e.pred_first_err > STEP_TOL
            || e.pred_last_err > STEP_TOL
            || !ieee_exact
        {
            failures.push(name);
        }
    }
    println!(
        "overall: rel-L2 {overall:e}, max-abs/max-ref {overall_maxabs:e}, \
         {exact}/30 bit-exact vs ieee_sqrt"
    );
    assert_eq!(combos(&fx).len(), 30);
    assert!(
        failures.is_empty(),
        "combos over tolerance or not bit-exact: {failures:?}"
    );
}

/// The tolerance is tight enough to see a 1e-5 relative change of eta.
#[test]
fn parity_check_detects_small_deviation() {
    let fx = Fixtures::load();
    let combo = combos(&fx)
        .iter()
        .find(|c| {
            c["config"] == "i2vgen_xl" && c["spacing"] == "leading" && c["eta_key"] == "eta0p5"
        })
        .unwrap();
    let e = run_combo(&fx, combo, 0.5 * (1.0 + 1e-5));
    assert!(
        e.max_step_err > STEP_TOL,
        "perturbed eta went unnoticed: {:e}",
        e.max_step_err
    );
}

#[test]
fn i2vgen_xl_timesteps_50() {
    let mut sched = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    let ts = sched.set_timesteps(50).unwrap();
    let expected: Vec<i64> = (0..50).rev().map(|i| i * 20 + 1).collect();
    assert_eq!(ts.first(), Some(&981));
    assert_eq!(ts.last(), Some(&1));
    assert_eq!(ts, expected);
    assert_eq!(sched.num_inference_steps(), Some(50));
    assert_eq!(sched.init_noise_sigma(), 1.0);
    // Zero terminal SNR.
    assert_eq!(sched.alphas_cumprod()[999], 0.0);
    assert_eq!(sched.final_alpha_cumprod(), 1.0);
}

#[test]
fn published_config_json_parses() {
    let json = r#"{
      "_class_name": "DDIMScheduler",
      "_diffusers_version": "0.25.0.dev0",
      "beta_end": 0.012,
      "beta_schedule": "squaredcos_cap_v2",
      "beta_start": 0.00085,
      "clip_sample": false,
      "clip_sample_range": 1.0,
      "dynamic_thresholding_ratio": 0.995,
      "num_train_timesteps": 1000,
      "prediction_type": "v_prediction",
      "rescale_betas_zero_snr": true,
      "sample_max_value": 1.0,
      "set_alpha_to_one": true,
      "steps_offset": 1,
      "thresholding": false,
      "timestep_spacing": "leading",
      "trained_betas": null
    }"#;
    let config: DdimConfig = serde_json::from_str(json).unwrap();
    assert_eq!(config, DdimConfig::i2vgen_xl());
}

#[test]
fn config_defaults_match_diffusers_constructor() {
    let config: DdimConfig =
        serde_json::from_str(r#"{"_class_name": "DDIMScheduler", "some_future_key": [1, 2]}"#)
            .unwrap();
    assert_eq!(config, DdimConfig::default());
    assert_eq!(config.num_train_timesteps, 1000);
    assert_eq!(config.beta_start, 0.0001);
    assert_eq!(config.beta_end, 0.02);
    assert_eq!(config.beta_schedule, BetaSchedule::Linear);
    assert_eq!(config.trained_betas, None);
    assert!(config.clip_sample);
    assert!(config.set_alpha_to_one);
    assert_eq!(config.steps_offset, 0);
    assert_eq!(config.prediction_type, PredictionType::Epsilon);
    assert_eq!(config.clip_sample_range, 1.0);
    assert!(!config.thresholding);
    assert_eq!(config.timestep_spacing, TimestepSpacing::Leading);
    assert!(!config.rescale_betas_zero_snr);

    let partial: DdimConfig = serde_json::from_str(
        r#"{"beta_schedule": "scaled_linear", "prediction_type": "sample", "timestep_spacing": "trailing", "steps_offset": 1}"#,
    )
    .unwrap();
    assert_eq!(partial.beta_schedule, BetaSchedule::ScaledLinear);
    assert_eq!(partial.prediction_type, PredictionType::Sample);
    assert_eq!(partial.timestep_spacing, TimestepSpacing::Trailing);
    assert_eq!(partial.steps_offset, 1);
    assert_eq!(partial.beta_end, 0.02);

    assert!(serde_json::from_str::<DdimConfig>(r#"{"beta_schedule": "sigmoid"}"#).is_err());
    assert!(serde_json::from_str::<DdimConfig>(r#"{"prediction_type": "flow"}"#).is_err());
}

#[test]
fn from_file_reads_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("vivify-ddim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let good = dir.join("scheduler_config.json");
    std::fs::write(
        &good,
        r#"{"prediction_type": "v_prediction", "extra": true}"#,
    )
    .unwrap();
    let config = DdimConfig::from_file(&good).unwrap();
    assert_eq!(config.prediction_type, PredictionType::VPrediction);

    let bad = dir.join("bad_config.json");
    std::fs::write(&bad, r#"{"beta_schedule": 3"#).unwrap();
    let err = DdimConfig::from_file(&bad).unwrap_err();
    assert!(matches!(&err, Error::Config { path, .. } if path.contains("bad_config.json")));
    assert!(err.to_string().contains("bad_config.json"), "{err}");

    let thresh = dir.join("thresholding.json");
    std::fs::write(&thresh, r#"{"thresholding": true}"#).unwrap();
    let err = DdimConfig::from_file(&thresh).unwrap_err();
    assert!(matches!(&err, Error::Config { path, .. } if path.contains("thresholding.json")));
    assert!(err.to_string().contains("thresholding"), "{err}");

    let missing = dir.join("missing.json");
    let err = DdimConfig::from_file(&missing).unwrap_err();
    assert!(matches!(&err, Error::Io { path, .. } if path == &missing));

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn thresholding_is_refused() {
    let err = DdimScheduler::new(DdimConfig {
        thresholding: true,
        ..DdimConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field: "thresholding", message } if message.contains("not supported")),
        "{err}"
    );
}

#[test]
fn bad_configs_are_refused() {
    let err = DdimScheduler::new(DdimConfig {
        trained_betas: Some(vec![0.1; 10]),
        ..DdimConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "trained_betas",
            ..
        }
    ));

    let err = DdimScheduler::new(DdimConfig {
        num_train_timesteps: 0,
        ..DdimConfig::default()
    })
    .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "num_train_timesteps",
            ..
        }
    ));

    let err = DdimScheduler::new(DdimConfig {
        beta_end: 1.5,
        ..DdimConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { field: "betas", .. }));
}

#[test]
fn trained_betas_are_used() {
    let betas: Vec<f64> = (0..1000).map(|i| 0.0001 + i as f64 * 1e-5).collect();
    let sched = DdimScheduler::new(DdimConfig {
        trained_betas: Some(betas.clone()),
        beta_schedule: BetaSchedule::SquaredcosCapV2,
        ..DdimConfig::default()
    })
    .unwrap();
    let expected: Vec<f32> = betas.iter().map(|&b| b as f32).collect();
    assert_eq!(sched.betas(), expected.as_slice());
}

#[test]
fn step_count_errors() {
    let mut sched = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    for n in [0, 1001, usize::MAX] {
        let err = sched.set_timesteps(n).unwrap_err();
        match &err {
            Error::InvalidArgument { field, message } => {
                assert_eq!(*field, "steps");
                assert!(message.contains("1000"), "{message}");
            }
            other => panic!("unexpected error {other}"),
        }
    }
    assert_eq!(sched.set_timesteps(1000).unwrap().len(), 1000);
    assert_eq!(sched.set_timesteps(1).unwrap(), vec![1]);
}

fn small(seed: u64) -> Tensor {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    vivify_core::scheduler::gaussian_noise(&mut rng, (1, 4, 2, 3, 3), &Device::Cpu).unwrap()
}

#[test]
fn step_argument_errors() {
    let x = small(1);
    let m = small(2);
    let mut sched = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    let err = sched.step(&m, 981, &x, 0.0, None).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "num_inference_steps",
            ..
        }
    ));

    sched.set_timesteps(50).unwrap();
    for t in [-1, 1000, i64::MAX, i64::MIN] {
        let err = sched.step(&m, t, &x, 0.0, None).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    field: "timestep",
                    ..
                }
            ),
            "{t}"
        );
    }
    for eta in [-0.1, f64::NAN, f64::INFINITY] {
        let err = sched.step(&m, 981, &x, eta, None).unwrap_err();
        assert!(
            matches!(err, Error::InvalidArgument { field: "eta", .. }),
            "{eta}"
        );
    }
    let err = sched.step(&m, 981, &x, 0.5, None).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "variance_noise",
            ..
        }
    ));
    let wrong = Tensor::zeros((1, 4, 2, 3, 2), DType::F32, &Device::Cpu).unwrap();
    let err = sched.step(&m, 981, &x, 0.5, Some(&wrong)).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "variance_noise",
            ..
        }
    ));
    let err = sched.step(&wrong, 981, &x, 0.0, None).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "model_output",
            ..
        }
    ));
    let ints = x.to_dtype(DType::U32).unwrap();
    assert!(sched.step(&m, 981, &ints, 0.0, None).is_err());

    // Epsilon prediction cannot invert a zero-SNR timestep.
    let mut eps = DdimScheduler::new(DdimConfig {
        prediction_type: PredictionType::Epsilon,
        timestep_spacing: TimestepSpacing::Trailing,
        ..DdimConfig::i2vgen_xl()
    })
    .unwrap();
    let ts = eps.set_timesteps(50).unwrap();
    assert_eq!(ts[0], 999);
    let err = eps.step(&m, 999, &x, 0.0, None).unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            field: "timestep",
            ..
        }
    ));
    assert!(eps.step(&m, ts[1], &x, 0.0, None).is_ok());
}

#[test]
fn step_with_rng_is_seeded() {
    let x = small(3);
    let m = small(4);
    let mut sched = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    sched.set_timesteps(25).unwrap();
    let run = |seed: u64, eta: f64| {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        sched
            .step_with_rng(&m, 481, &x, eta, &mut rng)
            .unwrap()
            .prev_sample
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    assert_eq!(run(7, 0.5), run(7, 0.5));
    assert_ne!(run(7, 0.5), run(8, 0.5));
    let deterministic = sched
        .step(&m, 481, &x, 0.0, None)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(run(7, 0.0), deterministic);
    assert_ne!(run(7, 0.5), deterministic);

    // Same noise as step_with_rng draws, passed explicitly.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let noise = vivify_core::scheduler::gaussian_noise(&mut rng, x.shape(), &Device::Cpu).unwrap();
    let explicit = sched
        .step(&m, 481, &x, 0.5, Some(&noise))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(run(7, 0.5), explicit);
}

#[test]
fn gaussian_noise_is_standard_normal() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let n = vivify_core::scheduler::gaussian_noise(&mut rng, 100_001, &Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(n.len(), 100_001);
    let mean = n.iter().map(|&v| v as f64).sum::<f64>() / n.len() as f64;
    let var = n.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n.len() as f64;
    assert!(mean.abs() < 0.02, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "var {var}");
}

#[test]
fn half_precision_is_computed_in_f32() {
    let x = small(5);
    let m = small(6);
    let mut sched = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    sched.set_timesteps(50).unwrap();
    let reference = sched.step(&m, 501, &x, 0.0, None).unwrap();
    for dtype in [DType::F16, DType::BF16] {
        let xh = x.to_dtype(dtype).unwrap();
        let mh = m.to_dtype(dtype).unwrap();
        let out = sched.step(&mh, 501, &xh, 0.0, None).unwrap();
        assert_eq!(out.dtype(), dtype);
        // Inputs quantised to the half type and one final rounding.
        let expected = sched
            .step(
                &mh.to_dtype(DType::F32).unwrap(),
                501,
                &xh.to_dtype(DType::F32).unwrap(),
                0.0,
                None,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(
            out.to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            expected.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let err = rel_max_err(&out.to_dtype(DType::F32).unwrap(), &reference);
        assert!(err < 2e-2, "{dtype:?}: {err}");
    }
    let out64 = sched
        .step(
            &m.to_dtype(DType::F64).unwrap(),
            501,
            &x.to_dtype(DType::F64).unwrap(),
            0.0,
            None,
        )
        .unwrap();
    assert_eq!(out64.dtype(), DType::F64);
    assert!(rel_max_err(&out64.to_dtype(DType::F32).unwrap(), &reference) < 1e-6);
}
