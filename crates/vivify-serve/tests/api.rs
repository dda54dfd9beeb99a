//! The API in-process: a `Server` on an ephemeral port with the built-in tiny model, driven over
//! real HTTP. crates/vivify-cli/tests/serve.rs runs the same checks against the binary.

mod common;

use common::{
    Http, check_bad_input, check_delete, check_info_routes, check_job_lifecycle, png, tiny_params,
};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use vivify_core::memory::ModelConfigs;
use vivify_core::weights::tiny_models;
use vivify_serve::state::Info;
use vivify_serve::{Limits, ModelLoader, ServeConfig, Server, WorkerConfig};

struct TestServer {
    runtime: tokio::runtime::Runtime,
    server: Option<Server>,
    http: Http,
}

impl TestServer {
    fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            self.runtime.block_on(s.shutdown());
        }
    }
}

fn tiny_loader() -> ModelLoader {
    Arc::new(|| {
        Ok(tiny_models(
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )?)
    })
}

fn config(dir: &Path, limits: Limits, step_delay_ms: u64, loader: ModelLoader) -> ServeConfig {
    let m = tiny_models(candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let configs = ModelConfigs {
        unet: m.unet.config.clone(),
        vae: m.vae.config.clone(),
        text: m.text_encoder.config.clone(),
        vision: m.image_encoder.config.clone(),
    };
    ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        data_dir: dir.to_path_buf(),
        info: Info {
            model: "tiny".into(),
            device: "cpu".into(),
            dtype: candle_core::DType::F32,
            limits,
            memory_budget: None,
            model_configs: Some(configs),
            tokenizer: Some(m.tokenizer),
        },
        worker: WorkerConfig {
            loader,
            store: None,
            device: candle_core::Device::Cpu,
            dtype: candle_core::DType::F32,
            unload_after: None,
            step_delay: Duration::from_millis(step_delay_ms),
            simulate_denoise_oom: None,
        },
    }
}

fn start_with(config: ServeConfig) -> anyhow::Result<TestServer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = runtime.block_on(Server::start(config))?;
    let http = Http::new(format!("http://{}", server.addr));
    Ok(TestServer {
        runtime,
        server: Some(server),
        http,
    })
}

fn start(dir: &Path, step_delay_ms: u64) -> TestServer {
    start_with(config(dir, Limits::DEV, step_delay_ms, tiny_loader())).unwrap()
}

#[test]
fn every_route_and_every_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 150);
    check_info_routes(&s.http);
    check_bad_input(&s.http);
    let uploads = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "a refused upload was stored");
    let id = check_job_lifecycle(&s.http);
    // Stored files have server-made names only.
    for entry in std::fs::read_dir(dir.path().join("uploads")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(name.ends_with(".png") && name.len() == 20, "{name}");
    }
    check_delete(&s.http, &id);
    s.shutdown();
}

#[test]
fn standard_limits_are_the_pages_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(config(dir.path(), Limits::STANDARD, 0, tiny_loader())).unwrap();
    let r = s.http.post_job(&png(64, 64), &tiny_params(2));
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["field"], "frames", "{v}");
    assert_eq!(v["limit"], "8 to 32", "{v}");
    let mut p = tiny_params(2);
    p["frames"] = json!(8);
    let v = s.http.post_job(&png(64, 64), &p).json();
    assert_eq!(
        (v["field"].as_str(), v["limit"].as_str()),
        (Some("steps"), Some("10 to 100"))
    );
    let system = s.http.get("/api/system").json();
    assert_eq!(system["limits"]["steps"], json!([10, 100]));
    s.shutdown();
}

#[test]
fn fifo_queue_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 300);
    let http = &s.http;
    let a = http.queue(&png(64, 64), &tiny_params(4));
    let b = http.queue(&png(64, 64), &tiny_params(2));
    let c = http.queue(&png(64, 64), &tiny_params(2));
    http.wait_state(&a, "running");
    assert_eq!(http.job(&b)["queue_position"], 0);
    assert_eq!(http.job(&c)["queue_position"], 1);
    // Cancel a queued job: at once.
    let r = http.delete(&format!("/api/jobs/{c}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "cancelled");
    assert_eq!(
        http.events(&c),
        vec![("cancelled".to_string(), json!({"type": "cancelled"}))]
    );
    // Cancel the running job: it stops between steps.
    http.wait_job(&a, "a step", |j| j["progress"]["step"].as_u64() >= Some(1));
    let r = http.delete(&format!("/api/jobs/{a}"));
    assert_eq!(r.status, 202);
    assert_eq!(r.json()["cancel_requested"], true);
    let a_events = http.events(&a);
    assert_eq!(a_events.last().unwrap().0, "cancelled");
    let ja = http.job(&a);
    assert_eq!(ja["state"], "cancelled", "{ja}");
    // The next one in line runs to the end, after the first stopped.
    let jb = http.wait_state(&b, "done");
    assert!(
        jb["started_at"].as_f64() >= ja["finished_at"].as_f64(),
        "{ja} {jb}"
    );
    assert!(
        !dir.path()
            .join(format!("checkpoints/{a}.safetensors"))
            .exists()
    );
    s.shutdown();
}

#[test]
fn shutdown_checkpoints_and_the_next_start_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 300);
    let id = s.http.queue(&png(64, 64), &tiny_params(5));
    s.http.wait_job(&id, "two steps", |j| {
        j["progress"]["step"].as_u64() >= Some(2)
    });
    s.shutdown();
    let checkpoint = dir.path().join(format!("checkpoints/{id}.safetensors"));
    assert!(checkpoint.exists(), "no checkpoint after shutdown");
    let s = start(dir.path(), 0);
    let job = s.http.wait_state(&id, "done");
    assert_eq!(job["resumed"], 1, "{job}");
    assert!(!checkpoint.exists());
    assert_eq!(s.http.get(&format!("/api/jobs/{id}/video")).status, 200);
    s.shutdown();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), 0);
    let err = start_with(config(dir.path(), Limits::DEV, 0, tiny_loader()))
        .err()
        .expect("the second server started");
    let text = format!("{err:#}");
    assert!(text.contains("already using the data directory"), "{text}");
    assert_eq!(s.http.get("/api/health").status, 200);
    s.shutdown();
}

#[test]
fn failures_are_reported_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = Arc::clone(&calls);
    // The model fails to load, then panics while loading, then loads.
    let loader: ModelLoader =
        Arc::new(
            move || match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0 | 1 => anyhow::bail!("no weights here"),
                2 => panic!("loader exploded"),
                _ => Ok(tiny_models(
                    candle_core::DType::F32,
                    &candle_core::Device::Cpu,
                )?),
            },
        );
    let s = start_with(config(dir.path(), Limits::DEV, 0, loader)).unwrap();
    let failed = s.http.queue(&png(64, 64), &tiny_params(2));
    let events = s.http.events(&failed);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "failed");
    assert!(
        data["error"].as_str().unwrap().contains("no weights here"),
        "{data}"
    );
    let job = s.http.job(&failed);
    assert_eq!(job["state"], "failed");
    assert!(
        job["error"].as_str().unwrap().contains("loading the model"),
        "{job}"
    );
    let panicked = s.http.queue(&png(64, 64), &tiny_params(2));
    let job = s.http.wait_state(&panicked, "failed");
    assert!(
        job["error"].as_str().unwrap().contains("internal error"),
        "{job}"
    );
    let ok = s.http.queue(&png(64, 64), &tiny_params(2));
    s.http.wait_state(&ok, "done");
    s.shutdown();
}

#[test]
fn the_model_is_kept_warm_and_unloaded_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Limits::DEV, 0, tiny_loader());
    cfg.worker.unload_after = Some(Duration::from_millis(1500));
    let s = start_with(cfg).unwrap();
    let loaded = |http: &Http| http.get("/api/health").json()["model_loaded"] == true;
    let wait = |want: bool| {
        let start = std::time::Instant::now();
        while loaded(&s.http) != want {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "model_loaded never {want}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait(true);
    wait(false);
    let id = s.http.queue(&png(64, 64), &tiny_params(2));
    s.http.wait_state(&id, "done");
    assert!(loaded(&s.http), "loaded again for the job");
    s.shutdown();
}

/// A budget only a staged plan fits: the job runs from the store with the warm model freed,
/// and finishes.
#[test]
fn a_tight_budget_runs_jobs_with_models_loaded_per_stage() {
    use vivify_core::memory::planner::frugal_plan;
    use vivify_core::memory::{Backend, RequestShape, evaluate, usable};
    use vivify_core::pipeline::plan::{ExecutionPlan, Residency};
    use vivify_core::pipeline::store::ModelStore;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Limits::DEV, 0, tiny_loader());
    // 64x64x4 guided, as tiny_params: between the most frugal plan's peak with every model
    // resident and its peak with models loaded per stage
    let shape = RequestShape {
        width: 64,
        height: 64,
        frames: 4,
        guidance: true,
        decode_chunk: 1,
    };
    let configs = cfg.info.model_configs.clone().unwrap();
    let peak = |residency| {
        let (frugal, dc) = frugal_plan(&shape);
        let plan = ExecutionPlan {
            residency,
            ..frugal
        };
        evaluate(
            &configs,
            &shape,
            candle_core::DType::F32,
            1 << 40,
            Backend::Cuda,
            plan,
            dc,
        )
        .unwrap()
        .predicted_peak_bytes()
    };
    let (all, staged) = (peak(Residency::AllResident), peak(Residency::Staged));
    assert!(staged < all, "{staged} vs {all}");
    let budget = ((staged + all) / 2) as f64 / 0.95;
    let budget = budget as u64;
    assert!(usable(budget) < all && usable(budget) > staged);
    cfg.info.memory_budget = Some(budget);
    cfg.worker.store =
        Some(ModelStore::tiny(candle_core::DType::F32, &candle_core::Device::Cpu).unwrap());
    let s = start_with(cfg).unwrap();
    let preview = s
        .http
        .get("/api/plan?width=64&height=64&frames=4&guidance=7.5")
        .json();
    assert_eq!(preview["fits"], true, "{preview}");
    assert_ne!(preview["plan"]["residency"], "all_resident", "{preview}");
    assert!(
        preview["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().starts_with("models loaded per stage")),
        "{preview}"
    );
    let id = s.http.queue(&png(64, 64), &tiny_params(2));
    s.http.wait_state(&id, "done");
    assert_eq!(
        s.http.get("/api/health").json()["model_loaded"],
        false,
        "the warm model is freed for a staged job"
    );
    s.shutdown();
}

/// A job on the warm models that runs out of memory while denoising, with every chunking rung
/// taken, steps down to staged weights: the warm models are freed and the job finishes; the
/// next job loads them again (a job on no models would fail) and steps down the same way.
#[test]
fn a_job_that_steps_down_frees_the_warm_model_and_the_next_reloads_it() {
    use vivify_core::pipeline::store::ModelStore;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Limits::DEV, 200, tiny_loader());
    cfg.worker.store =
        Some(ModelStore::tiny(candle_core::DType::F32, &candle_core::Device::Cpu).unwrap());
    // sequential guidance and the twelve chunking rungs, then staged weights
    cfg.worker.simulate_denoise_oom = Some(14);
    let s = start_with(cfg).unwrap();
    for job in 0..2 {
        let id = s.http.queue(&png(64, 64), &tiny_params(2));
        s.http.wait_job(&id, "a step-down to staged weights", |j| {
            j["progress"]["step_downs"]
                .as_array()
                .is_some_and(|d| d.iter().any(|s| s == "denoise: model weights staged"))
        });
        let done = s.http.wait_state(&id, "done");
        assert!(done["error"].is_null(), "job {job}: {done}");
        // the record keeps the step-downs after the job ends
        let kept = done["step_downs"].as_array().expect("step_downs kept");
        assert_eq!(
            kept.last().unwrap(),
            "denoise: model weights staged",
            "job {job}: {done}"
        );
        assert_eq!(
            s.http.get("/api/health").json()["model_loaded"],
            false,
            "job {job}: the warm model is freed"
        );
    }
    s.shutdown();
}
