//! Weight residency on the tiny model: staged runs (models loaded per stage) and runs with the
//! UNet's blocks streamed from host memory give the frames of an all-resident run, step down
//! and resume like it, and a streamer holds no more blocks than its window.

use candle_core::{DType, Device, Tensor};
use vivify_core::models::unet::streaming::StreamedUNet;
use vivify_core::models::unet::{BlockId, UNetInputs, UNetModel};
use vivify_core::nn::compute::ComputeOptions;
use vivify_core::pipeline::components::Components;
use vivify_core::pipeline::generate::{
    Event, GenerateOptions, Generation, Progress, Stage, generate, generate_from, resume_from,
};
use vivify_core::pipeline::pillow_resize::Rgb8;
use vivify_core::pipeline::plan::{ExecutionPlan, Residency};
use vivify_core::pipeline::recovery::{
    BudgetGuard, Checkpoint, FailAt, FaultInjector, FaultPoint, StagePlan, step_down,
};
use vivify_core::pipeline::request::GenerationRequest;
use vivify_core::pipeline::store::ModelStore;
use vivify_core::weights::{tiny_models, tiny_unet, tiny_unet_config, tiny_unet_host};

fn store() -> ModelStore {
    ModelStore::tiny(DType::F32, &Device::Cpu).unwrap()
}

fn image() -> Rgb8 {
    let (w, h) = (40, 30);
    let data = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    Rgb8::new(w, h, data)
}

fn request(residency: Residency) -> GenerationRequest {
    GenerationRequest {
        negative_prompt: "blurry".into(),
        width: 32,
        height: 24,
        frames: 3,
        steps: 3,
        seed: 7,
        decode_chunk: 2,
        plan: ExecutionPlan {
            residency,
            ..Default::default()
        },
        ..GenerationRequest::new(image(), "a red balloon")
    }
}

/// The all-resident run every other residency must reproduce.
fn baseline() -> Generation {
    let models = tiny_models(DType::F32, &Device::Cpu).unwrap();
    generate(
        &models,
        &request(Residency::AllResident),
        &Device::Cpu,
        |_| {},
    )
    .unwrap()
}

/// A run that takes its models from `store`, as the plan's residency says.
fn from_store(
    store: &ModelStore,
    req: &GenerationRequest,
    options: &GenerateOptions,
) -> vivify_core::Result<Generation> {
    generate_from(Components::Store(store), req, &Device::Cpu, options, |_| {})
}

/// The same latents (to `tol`, relative L2) and the same frames, value for value.
fn assert_same(what: &str, ours: &Generation, baseline: &Generation, tol: f64) {
    let diff = (&ours.latents - &baseline.latents)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt() as f64;
    let norm = baseline
        .latents
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt() as f64;
    assert!(
        diff / norm <= tol,
        "{what}: latents differ by {:e}",
        diff / norm
    );
    if tol == 0.0 {
        assert_eq!(ours.frames.len(), baseline.frames.len(), "{what}");
        for (a, b) in ours.frames.iter().zip(&baseline.frames) {
            assert!(a.data == b.data, "{what}: frames differ");
        }
    }
}

const RESIDENCIES: [Residency; 4] = [
    Residency::Staged,
    Residency::StreamedUnet { resident_blocks: 1 },
    Residency::StreamedUnet { resident_blocks: 2 },
    // a window longer than the UNet: nothing is freed between passes
    Residency::StreamedUnet {
        resident_blocks: 100,
    },
];

#[test]
fn staged_and_streamed_runs_give_the_frames_of_an_all_resident_run() {
    let models = tiny_models(DType::F32, &Device::Cpu).unwrap();
    let baseline = baseline();
    let store = store();
    // The store rebuilds the tiny model's weights, so all resident from it is the same run.
    let all_from_store = from_store(
        &store,
        &request(Residency::AllResident),
        &GenerateOptions::default(),
    )
    .unwrap();
    assert_same(
        "all resident from the store",
        &all_from_store,
        &baseline,
        0.0,
    );
    for residency in RESIDENCIES {
        let req = request(residency);
        let out = from_store(&store, &req, &GenerateOptions::default()).unwrap();
        assert_same(&format!("{residency:?}"), &out, &baseline, 0.0);
        // the residency is part of the plan the run records
        assert_eq!(out.final_plan().plan.residency, residency);
        // and a chunked plan streams the same numbers as a chunked resident one
        let chunked = ComputeOptions {
            attention_query_chunk: Some(5),
            conv_frame_chunk: Some(2),
            ..Default::default()
        };
        let with = |residency| GenerationRequest {
            plan: ExecutionPlan {
                compute: chunked,
                sequential_guidance: true,
                residency,
            },
            ..request(residency)
        };
        let resident =
            generate(&models, &with(Residency::AllResident), &Device::Cpu, |_| {}).unwrap();
        let ours = from_store(&store, &with(residency), &GenerateOptions::default()).unwrap();
        assert_same(&format!("{residency:?} chunked"), &ours, &resident, 0.0);
    }
}

#[test]
fn staged_runs_step_down_and_resume() {
    let baseline = baseline();
    let store = store();
    for residency in [
        Residency::Staged,
        Residency::StreamedUnet { resident_blocks: 2 },
    ] {
        let req = request(residency);
        // A failure in denoising steps down and goes on, with the model loaded per stage.
        let injector = FailAt::new(FaultPoint::DenoiseStep(1), 1);
        let out = from_store(
            &store,
            &req,
            &GenerateOptions {
                injector: Some(&injector),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(injector.remaining(), 0);
        assert_eq!(out.step_downs.len(), 1, "{residency:?}");
        assert_same(
            &format!("{residency:?} stepped down"),
            &out,
            &baseline,
            1e-5,
        );

        // A failure no rung fixes saves a checkpoint that a staged resume finishes.
        let dir = tempfile::tempdir().unwrap();
        let always = FailAt::new(FaultPoint::DecodeChunk(0), usize::MAX);
        let err = from_store(
            &store,
            &req,
            &GenerateOptions {
                injector: Some(&always),
                checkpoint_dir: Some(dir.path().to_path_buf()),
                after_step: None,
            },
        )
        .unwrap_err();
        assert!(err.is_out_of_memory(), "{err}");
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let saved = Checkpoint::load(&path).unwrap();
        assert_eq!(saved.meta.plan.residency, residency);
        let again = GenerationRequest {
            decode_chunk: req.decode_chunk,
            ..saved.meta.request(image())
        };
        let resumed = resume_from(
            Components::Store(&store),
            &again,
            &path,
            &Device::Cpu,
            &GenerateOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_same(&format!("{residency:?} resumed"), &resumed, &baseline, 0.0);
    }
}

/// A staged run that still runs out of memory with every chunking rung taken streams the UNet's
/// blocks (reloading it) and finishes with the same frames.
#[test]
fn a_staged_run_steps_down_to_streamed_weights() {
    let baseline = baseline();
    let req = request(Residency::Staged);
    // The guard lets denoising through only at the first streamed rung.
    let start = StagePlan::of(&req);
    let guard = guard_leaving(start, Residency::Staged);
    assert_eq!(
        guard.needed.plan.residency,
        Residency::StreamedUnet { resident_blocks: 2 }
    );
    let store = store();
    let out = from_store(
        &store,
        &req,
        &GenerateOptions {
            injector: Some(&guard),
            ..Default::default()
        },
    )
    .unwrap();
    let last = out.step_downs.last().expect("stepped down");
    assert_eq!(
        (last.from.as_str(), last.to.as_str()),
        ("UNet weights staged", "UNet weights streamed:2")
    );
    assert_eq!(out.final_plan().plan.residency, guard.needed.plan.residency);
    assert_same("staged, stepped down to streamed", &out, &baseline, 1e-5);
}

/// A budget that lets denoising through only from the first plan below `start` where the
/// weights have left `residency`.
fn guard_leaving(start: StagePlan, residency: Residency) -> BudgetGuard {
    BudgetGuard::after_rungs(
        Stage::Denoise,
        start,
        rungs_to_leave(start, residency),
        true,
    )
}

/// The number of denoising rungs from `start` down to the plan where the weights first leave
/// `residency`.
fn rungs_to_leave(start: StagePlan, residency: Residency) -> usize {
    let mut rungs = 0;
    let mut p = start;
    while p.plan.residency == residency {
        p = step_down(&p, Stage::Denoise, true).expect("a rung below").0;
        rungs += 1;
    }
    rungs
}

/// An all-resident run from a store that runs out of memory with every chunking rung taken
/// frees its encoders and VAE (staged weights) and finishes with the frames of an all-resident
/// run at that plan.
#[test]
fn an_all_resident_run_steps_down_to_staged_weights() {
    let req = request(Residency::AllResident);
    let start = StagePlan::of(&req);
    let guard = guard_leaving(start, Residency::AllResident);
    assert_eq!(guard.needed.plan.residency, Residency::Staged);
    let store = store();
    let out = from_store(
        &store,
        &req,
        &GenerateOptions {
            injector: Some(&guard),
            ..Default::default()
        },
    )
    .unwrap();
    let last = out.step_downs.last().expect("stepped down");
    assert_eq!(
        (last.from.as_str(), last.to.as_str()),
        ("model weights all resident", "model weights staged")
    );
    assert_eq!(out.final_plan().plan, guard.needed.plan);
    // Every step ran at the guard's plan: the frames of an all-resident run at it, exactly.
    let models = tiny_models(DType::F32, &Device::Cpu).unwrap();
    let resident = GenerationRequest {
        plan: ExecutionPlan {
            residency: Residency::AllResident,
            ..guard.needed.plan
        },
        ..request(Residency::AllResident)
    };
    let expected = generate(&models, &resident, &Device::Cpu, |_| {}).unwrap();
    assert_same("all resident, stepped down to staged", &out, &expected, 0.0);
}

/// Runs out of memory from denoising step `from` on, until the plan is as low as `guard` needs.
struct FromStep {
    from: usize,
    guard: BudgetGuard,
}

impl FaultInjector for FromStep {
    fn check(&self, point: FaultPoint, plan: &StagePlan) -> candle_core::Result<()> {
        match point {
            FaultPoint::DenoiseStep(n) if n >= self.from => self.guard.check(point, plan),
            _ => Ok(()),
        }
    }
}

/// The caller's warm models: a run that steps down past staged weights frees them, streams the
/// UNet and goes on from its last finished step to the frames of an uninterrupted run.
#[test]
fn a_warm_run_frees_its_models_and_steps_down_to_streamed_weights() {
    let baseline = baseline();
    let req = request(Residency::AllResident);
    let start = StagePlan::of(&req);
    let to_streamed = rungs_to_leave(start, Residency::AllResident) + 1;
    let injector = FromStep {
        from: 1,
        guard: BudgetGuard::after_rungs(Stage::Denoise, start, to_streamed, true),
    };
    assert_eq!(
        injector.guard.needed.plan.residency,
        Residency::StreamedUnet { resident_blocks: 2 }
    );
    let store = store();
    let mut warm = Some(store.load_all().unwrap());
    let mut events = Vec::new();
    let out = generate_from(
        Components::Warm {
            models: &mut warm,
            store: &store,
        },
        &req,
        &Device::Cpu,
        &GenerateOptions {
            injector: Some(&injector),
            ..Default::default()
        },
        |e| events.push(e),
    )
    .unwrap();
    assert!(warm.is_none(), "the warm models were not freed");
    let tos: Vec<&str> = out.step_downs.iter().map(|s| s.to.as_str()).collect();
    assert_eq!(
        tos[tos.len() - 2..],
        ["model weights staged", "UNet weights streamed:2"]
    );
    assert_eq!(out.final_plan().plan, injector.guard.needed.plan);
    // Each step ran once: the first all resident, the others after the step-downs.
    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(Progress::Step(s)) => Some(s.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, vec![1, 2, 3]);
    assert_same("warm, stepped down to streamed", &out, &baseline, 1e-5);

    // Without a step down the warm models stay.
    let mut warm = Some(store.load_all().unwrap());
    let components = Components::Warm {
        models: &mut warm,
        store: &store,
    };
    let out = generate_from(components, &req, &Device::Cpu, &Default::default(), |_| {}).unwrap();
    assert!(warm.is_some(), "the warm models were freed");
    assert_same("warm", &out, &baseline, 0.0);
}

/// Two injectors at once: a point fails when either fails it.
struct Both<'a> {
    first: &'a dyn FaultInjector,
    second: &'a dyn FaultInjector,
}

impl FaultInjector for Both<'_> {
    fn check(&self, point: FaultPoint, plan: &StagePlan) -> candle_core::Result<()> {
        self.first.check(point, plan)?;
        self.second.check(point, plan)
    }
}

/// An all-resident run that runs out of memory while decoding first frees the UNet and the
/// encoders (the VAE stays) and goes on from its last decoded chunk; a run whose denoising had
/// already stepped down to staged weights starts decoding staged, so its first decode rung is a
/// smaller chunk.
#[test]
fn an_all_resident_decoder_frees_the_other_models_first() {
    let baseline = baseline();
    let req = request(Residency::AllResident);
    let store = store();
    let mut warm = Some(store.load_all().unwrap());
    // the second decode call (frames 2..3) fails once
    let fail = FailAt::new(FaultPoint::DecodeChunk(1), 1);
    let mut decoded = Vec::new();
    let out = generate_from(
        Components::Warm {
            models: &mut warm,
            store: &store,
        },
        &req,
        &Device::Cpu,
        &GenerateOptions {
            injector: Some(&fail),
            ..Default::default()
        },
        |e| {
            if let Event::Progress(Progress::Decoded { frames, .. }) = e {
                decoded.push(frames)
            }
        },
    )
    .unwrap();
    assert_eq!(fail.remaining(), 0);
    assert!(warm.is_none(), "the warm models were not freed");
    let steps: Vec<_> = out
        .step_downs
        .iter()
        .map(|s| (s.stage, s.from.as_str(), s.to.as_str()))
        .collect();
    assert_eq!(
        steps,
        [(
            Stage::Decode,
            "model weights all resident",
            "model weights staged"
        )]
    );
    assert_eq!(decoded, [2, 3], "a decoded chunk was lost or redone");
    let decode_plan = out
        .stage_plans
        .iter()
        .find(|(s, _)| *s == Stage::Decode)
        .unwrap()
        .1;
    assert_eq!(decode_plan.plan.residency, Residency::Staged);
    assert_eq!(decode_plan.decode_chunk, req.decode_chunk);
    assert_same("decoder stepped down to staged", &out, &baseline, 0.0);

    // Denoising stepped down to staged weights: decoding starts staged.
    let start = StagePlan::of(&req);
    let guard = guard_leaving(start, Residency::AllResident);
    let fail = FailAt::new(FaultPoint::DecodeChunk(0), 1);
    let out = from_store(
        &store,
        &req,
        &GenerateOptions {
            injector: Some(&Both {
                first: &guard,
                second: &fail,
            }),
            ..Default::default()
        },
    )
    .unwrap();
    let last = out.step_downs.last().unwrap();
    assert_eq!(
        (last.stage, last.from.as_str(), last.to.as_str()),
        (
            Stage::Decode,
            "frames per decode call 2",
            "frames per decode call 1"
        )
    );
}

/// Models the caller holds cannot be freed or reloaded: such a run stops at the bottom of the
/// chunking rungs.
#[test]
fn a_run_on_the_callers_models_has_no_residency_rungs() {
    let models = tiny_models(DType::F32, &Device::Cpu).unwrap();
    let req = request(Residency::AllResident);
    let start = StagePlan::of(&req);
    let guard = guard_leaving(start, Residency::AllResident);
    let err = generate_from(
        Components::Resident(&models),
        &req,
        &Device::Cpu,
        &GenerateOptions {
            injector: Some(&guard),
            ..Default::default()
        },
        |_| {},
    )
    .unwrap_err();
    assert!(err.is_out_of_memory(), "{err}");
    assert!(!err.to_string().contains("weights"), "{err}");
}

fn unet_inputs_run(unet: &dyn UNetModel) -> Tensor {
    let dev = Device::Cpu;
    let (f, h, w) = (3, 3, 4);
    let t = |shape: &[usize], seed: u64| {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as u64 * 2654435761 + seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::from_vec(v, shape, &dev).unwrap()
    };
    let cross = tiny_unet_config().cross_attention_dim;
    unet.forward(&UNetInputs {
        sample: &t(&[2, 4, f, h, w], 1),
        timestep: 500.0,
        fps: 16.0,
        image_latents: &t(&[2, 4, f, h, w], 2),
        image_embeddings: &t(&[2, cross], 3),
        encoder_hidden_states: &t(&[2, 7, cross], 4),
        options: ComputeOptions::default(),
    })
    .unwrap()
}

#[test]
fn a_streamer_holds_only_its_window() {
    let resident = tiny_unet(DType::F32, &Device::Cpu).unwrap();
    let expected = unet_inputs_run(&resident);
    let blocks = BlockId::all(&tiny_unet_config()).len();
    for n in [1, 2, 3] {
        let host = tiny_unet_host(DType::F32, &Device::Cpu).unwrap();
        let streamed = StreamedUNet::new(&tiny_unet_config(), host, n).unwrap();
        assert!(
            streamed.resident().is_empty(),
            "nothing before the first pass"
        );
        for pass in 0..2 {
            let out = unet_inputs_run(&streamed);
            let diff = (&out - &expected)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "window {n}, pass {pass}");
            // after a pass: the prefetched start of the next one, N-1 blocks
            let held = streamed.resident();
            assert_eq!(held.len(), n - 1, "window {n}: {held:?}");
            if n > 1 {
                assert_eq!(held[0], BlockId::Down(0));
            }
        }
        // every block loaded once per pass, and the next pass's first N-1 prefetched
        assert_eq!(streamed.loads(), 2 * blocks + n - 1, "window {n}");
    }
}
