//! Out-of-memory recovery on the tiny model: a failure injected in any stage steps that stage
//! down and the run ends with the frames of an uninterrupted run; a failure no rung fixes ends
//! with `Error::OutOfMemory` and a checkpoint from which `resume` finishes the same frames.

use candle_core::{DType, Device, Tensor};
use vivify_core::Error;
use vivify_core::pipeline::generate::{
    Event, GenerateOptions, Generation, Progress, Stage, generate, generate_with, resume,
};
use vivify_core::pipeline::models::I2VGenXLModels;
use vivify_core::pipeline::pillow_resize::Rgb8;
use vivify_core::pipeline::plan::Residency;
use vivify_core::pipeline::recovery::{
    BudgetGuard, Checkpoint, FailAt, FaultPoint, StagePlan, step_down,
};
use vivify_core::pipeline::request::GenerationRequest;
use vivify_core::weights::tiny_models;

fn models() -> I2VGenXLModels {
    tiny_models(DType::F32, &Device::Cpu).unwrap()
}

fn image() -> Rgb8 {
    let (w, h) = (40, 30);
    let data = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    Rgb8::new(w, h, data)
}

fn request() -> GenerationRequest {
    GenerationRequest {
        negative_prompt: "blurry".into(),
        width: 32,
        height: 24,
        frames: 3,
        steps: 3,
        seed: 7,
        decode_chunk: 3,
        ..GenerationRequest::new(image(), "a red balloon")
    }
}

/// Relative L2 error of `ours` against `reference`.
fn relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    let norm = |t: &Tensor| {
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt() as f64
    };
    norm(&(ours - reference).unwrap()) / norm(reference)
}

/// Latents within `tol` relative L2 error and the same frames (no value more than one level
/// apart). A lower denoising rung batches differently, so float rounding differs (measured
/// about 2e-6 on the tiny model; `denoise_parity.rs` allows 1e-5 for the same strategies);
/// the other rungs and resuming at the same plan are exact.
fn assert_same_video(what: &str, ours: &Generation, baseline: &Generation, tol: f64) {
    let err = relative_error(&ours.latents, &baseline.latents);
    println!("{what}: latents relative error {err:.2e}");
    assert!(err <= tol, "{what}: latents differ by {err:e}");
    assert_eq!(
        ours.frames.len(),
        baseline.frames.len(),
        "{what}: frame count"
    );
    let mut max = 0;
    for (a, b) in ours.frames.iter().zip(&baseline.frames) {
        for (x, y) in a.data.iter().zip(&b.data) {
            max = max.max(x.abs_diff(*y));
        }
    }
    assert!(max <= 1, "{what}: frames differ by {max} levels");
}

/// Runs with `options`, returning the result and the events heard.
fn run_with(
    models: &I2VGenXLModels,
    req: &GenerationRequest,
    options: &GenerateOptions,
) -> (vivify_core::Result<Generation>, Vec<Event>) {
    let mut events = Vec::new();
    let out = generate_with(models, req, &Device::Cpu, options, |e| events.push(e));
    (out, events)
}

fn steps_reported(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Progress(Progress::Step(s)) => Some(s.step),
            _ => None,
        })
        .collect()
}

#[test]
fn classifier_recognises_allocation_failures() {
    let cuda = candle_core::Error::Cuda(Box::new(std::io::Error::other(
        "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")",
    )))
    .bt();
    assert!(vivify_core::error::is_out_of_memory(&cuda));
    let wrapped = candle_core::Error::Context {
        inner: Box::new(cuda),
        context: Box::new("decoding"),
    };
    assert!(vivify_core::error::is_out_of_memory(&wrapped));
    assert!(Error::from(wrapped).is_out_of_memory());
    let cublas = candle_core::Error::Cuda(Box::new(std::io::Error::other(
        "cuBLAS error CUBLAS_STATUS_ALLOC_FAILED",
    )));
    assert!(vivify_core::error::is_out_of_memory(&cublas));
    let other = candle_core::Error::Msg("shape mismatch in matmul".into());
    assert!(!vivify_core::error::is_out_of_memory(&other));
    let shape = candle_core::Error::UnexpectedNumberOfDims {
        expected: 4,
        got: 3,
        shape: (1, 2, 3).into(),
    };
    assert!(!Error::from(shape).is_out_of_memory());
}

#[test]
fn ladders_step_down_to_their_bottom() {
    let start = StagePlan::of(&request());
    // Denoise: sequential guidance, two sizes of each of six chunkings, then where the weights
    // live: staged, then the UNet's blocks streamed, two on the device, then one.
    let mut plan = start;
    let mut changes = Vec::new();
    while let Some((next, change)) = step_down(&plan, Stage::Denoise, true) {
        assert_ne!(next, plan, "{change}");
        changes.push(change);
        plan = next;
    }
    assert_eq!(changes.len(), 16, "{changes:?}");
    assert_eq!(changes[0], "sequential guidance: off -> on");
    assert_eq!(changes[1], "attention query chunk: all -> 4096");
    assert_eq!(changes[2], "attention query chunk: 4096 -> 1024");
    assert_eq!(
        changes[13..],
        [
            "model weights: all resident -> staged",
            "UNet weights: staged -> streamed:2",
            "UNet weights: streamed:2 -> streamed:1"
        ]
    );
    assert_eq!(
        plan.plan.residency,
        Residency::StreamedUnet { resident_blocks: 1 }
    );
    let c = plan.plan.compute;
    assert_eq!(
        (
            c.attention_query_chunk,
            c.attention_head_chunk,
            c.feed_forward_chunk,
            c.spatial_frame_chunk,
            c.temporal_pixel_chunk,
            c.conv_frame_chunk
        ),
        (
            Some(1024),
            Some(1),
            Some(1024),
            Some(1),
            Some(1024),
            Some(1)
        )
    );
    // A run that starts staged steps down the same chunkings to the same tail, less its first
    // rung.
    let mut staged = start;
    staged.plan.residency = Residency::Staged;
    let mut staged_changes = Vec::new();
    while let Some((next, change)) = step_down(&staged, Stage::Denoise, true) {
        staged_changes.push(change);
        staged = next;
    }
    assert_eq!(staged_changes[..13], changes[..13]);
    assert_eq!(staged_changes[13..], changes[14..]);
    assert_eq!(staged.plan.residency, plan.plan.residency);

    // A chunk already below a rung's size skips that rung.
    let mut small = start;
    small.plan.sequential_guidance = true;
    small.plan.compute.attention_query_chunk = Some(512);
    let (next, change) = step_down(&small, Stage::Denoise, true).unwrap();
    assert_eq!(change, "attention head slice: all -> 8");
    assert_eq!(next.plan.compute.attention_query_chunk, Some(512));

    // A run on models it cannot reload has the chunkings alone.
    let mut fixed = start;
    let mut fixed_changes = Vec::new();
    while let Some((next, change)) = step_down(&fixed, Stage::Denoise, false) {
        fixed_changes.push(change);
        fixed = next;
    }
    assert_eq!(fixed_changes[..], changes[..13]);
    assert_eq!(fixed.plan.residency, Residency::AllResident);

    // Decode: the chunk halves down to one frame, then row bands of 128 and 32 rows; an
    // all-resident run that can reload its models first frees all but the VAE.
    let decode = StagePlan {
        decode_chunk: 8,
        ..start
    };
    let ladder = |reloadable| {
        let mut plan = decode;
        let mut steps = vec![(plan.decode_chunk, plan.plan.compute.vae_row_band, None)];
        while let Some((next, change)) = step_down(&plan, Stage::Decode, reloadable) {
            assert_ne!(next, plan, "{change}");
            plan = next;
            steps.push((
                plan.decode_chunk,
                plan.plan.compute.vae_row_band,
                Some(change),
            ));
        }
        (steps, plan.plan.residency)
    };
    let (fixed_steps, residency) = ladder(false);
    let chunks_and_bands: Vec<_> = fixed_steps.iter().map(|(c, b, _)| (*c, *b)).collect();
    assert_eq!(
        chunks_and_bands,
        [
            (8, None),
            (4, None),
            (2, None),
            (1, None),
            (1, Some(128)),
            (1, Some(32))
        ]
    );
    assert_eq!(residency, Residency::AllResident);
    let (steps, residency) = ladder(true);
    assert_eq!(
        steps[1],
        (
            8,
            None,
            Some("model weights: all resident -> staged".to_string())
        )
    );
    assert_eq!(steps[0], fixed_steps[0]);
    assert_eq!(steps[2..], fixed_steps[1..]);
    assert_eq!(residency, Residency::Staged);
    // A decoder that already runs staged has no such rung.
    let mut staged_decode = decode;
    staged_decode.plan.residency = Residency::Staged;
    let (next, change) = step_down(&staged_decode, Stage::Decode, true).unwrap();
    assert_eq!(change, "frames per decode call: 8 -> 4");
    assert_eq!(next.plan.residency, Residency::Staged);

    // Encode stages: one retry with sequential rows.
    for stage in [Stage::EncodeText, Stage::EncodeImage] {
        let (next, _) = step_down(&start, stage, true).unwrap();
        assert!(step_down(&next, stage, true).is_none());
    }
}

#[test]
fn a_failure_in_each_stage_is_recovered_without_losing_work() {
    let models = models();
    let req = request();
    let baseline = generate(&models, &req, &Device::Cpu, |_| {}).unwrap();
    assert!(baseline.step_downs.is_empty());

    // (where, decode chunk, the setting it steps down to)
    let cases = [
        (
            FaultPoint::Encode(Stage::EncodeText),
            3,
            "sequential rows on",
        ),
        (
            FaultPoint::Encode(Stage::EncodeImage),
            3,
            "sequential rows on",
        ),
        (FaultPoint::DenoiseStep(1), 3, "sequential guidance on"),
        (FaultPoint::DecodeChunk(1), 2, "frames per decode call 1"),
    ];
    for (point, decode_chunk, to) in cases {
        let what = format!("{point:?}");
        let req = GenerationRequest {
            decode_chunk,
            ..request()
        };
        let injector = FailAt::new(point, 1);
        let options = GenerateOptions {
            injector: Some(&injector),
            ..Default::default()
        };
        let (out, events) = run_with(&models, &req, &options);
        let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(injector.remaining(), 0, "{what}: the fault was not reached");
        let tol = if point.stage() == Stage::Denoise {
            1e-5
        } else {
            0.0
        };
        assert_same_video(&what, &out, &baseline, tol);

        let step_downs: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::StepDown(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(step_downs.len(), 1, "{what}: {step_downs:?}");
        assert_eq!(step_downs[0].stage, point.stage(), "{what}");
        assert_eq!(step_downs[0].to, to, "{what}");
        assert!(
            step_downs[0].reason.contains("out of memory"),
            "{what}: {}",
            step_downs[0].reason
        );
        assert_eq!(out.step_downs, step_downs, "{what}");
        // Denoising went on from the last finished step: each step reported once.
        assert_eq!(steps_reported(&events), vec![1, 2, 3], "{what}");
        let decoded: Vec<usize> = events
            .iter()
            .filter_map(|e| match e {
                Event::Progress(Progress::Decoded { frames, .. }) => Some(*frames),
                _ => None,
            })
            .collect();
        let expected_decoded = if decode_chunk == 2 {
            vec![2, 3]
        } else {
            vec![3]
        };
        assert_eq!(decoded, expected_decoded, "{what}");
        let stage_plan = out
            .stage_plans
            .iter()
            .find(|(s, _)| *s == point.stage())
            .unwrap()
            .1;
        assert_ne!(stage_plan, StagePlan::of(&req), "{what}: final plan");
    }
}

#[test]
fn a_budget_guard_is_met_after_enough_rungs() {
    let models = models();
    let req = request();
    let baseline = generate(&models, &req, &Device::Cpu, |_| {}).unwrap();
    let guard = BudgetGuard::after_rungs(Stage::Denoise, StagePlan::of(&req), 3, false);
    let options = GenerateOptions {
        injector: Some(&guard),
        ..Default::default()
    };
    let (out, events) = run_with(&models, &req, &options);
    let out = out.unwrap();
    assert_same_video("budget guard", &out, &baseline, 1e-5);
    let tos: Vec<&str> = out.step_downs.iter().map(|s| s.to.as_str()).collect();
    assert_eq!(
        tos,
        vec![
            "sequential guidance on",
            "attention query chunk 4096",
            "attention query chunk 1024"
        ]
    );
    assert_eq!(out.final_plan(), guard.needed);
    assert_eq!(steps_reported(&events), vec![1, 2, 3]);
}

#[test]
fn an_unfixable_failure_saves_a_checkpoint_that_resume_finishes() {
    let models = models();
    let req = request();
    let baseline = generate(&models, &req, &Device::Cpu, |_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();

    for (point, saved_step) in [
        (FaultPoint::DenoiseStep(1), 1),
        (FaultPoint::DecodeChunk(0), 3),
        (FaultPoint::Encode(Stage::EncodeImage), 0),
    ] {
        let what = format!("{point:?}");
        let sub = dir.path().join(format!("{saved_step}"));
        let injector = FailAt::new(point, usize::MAX);
        let options = GenerateOptions {
            injector: Some(&injector),
            checkpoint_dir: Some(sub.clone()),
            after_step: None,
        };
        let (out, events) = run_with(&models, &req, &options);
        let err = out.unwrap_err();
        assert!(err.is_out_of_memory(), "{what}: {err}");
        let Error::OutOfMemory { stage, detail } = &err else {
            panic!("{what}: {err}")
        };
        assert_eq!(stage, point.stage().name(), "{what}");
        let message = err.to_string();
        assert!(message.contains("out of memory in"), "{what}: {message}");
        assert!(message.contains("--resume"), "{what}: {message}");
        let path = std::fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().path())
            .next()
            .expect("a checkpoint file");
        assert!(
            detail.contains(&path.display().to_string()),
            "{what}: {detail}"
        );
        assert!(events.iter().any(|e| matches!(e, Event::StepDown(_))) || saved_step == 0);

        let saved = Checkpoint::load(&path).unwrap();
        assert_eq!(saved.meta.step, saved_step, "{what}");
        assert_eq!(saved.meta.failed_stage, point.stage(), "{what}");
        assert_eq!(saved.meta.seed, req.seed);

        // The CLI passes the image again; everything else comes from the checkpoint.
        let again = saved.meta.request(image());
        let mut events = Vec::new();
        let resumed = resume(
            &models,
            &again,
            &path,
            &Device::Cpu,
            &GenerateOptions::default(),
            |e| events.push(e),
        )
        .unwrap_or_else(|e| panic!("{what}: resume: {e}"));
        assert_same_video(&format!("{what} resumed"), &resumed, &baseline, 1e-5);
        let expected_steps: Vec<usize> = (saved_step + 1..=3).collect();
        assert_eq!(steps_reported(&events), expected_steps, "{what}");
        // Resumed with the plan the finished steps ran with, the result is exact: no step was
        // lost or repeated.
        let same_plan = GenerationRequest {
            plan: req.plan,
            decode_chunk: req.decode_chunk,
            ..saved.meta.request(image())
        };
        let exact = resume(
            &models,
            &same_plan,
            &path,
            &Device::Cpu,
            &GenerateOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_same_video(
            &format!("{what} resumed at the first plan"),
            &exact,
            &baseline,
            0.0,
        );

        // A checkpoint does not resume another request.
        let other = GenerationRequest {
            prompt: "a blue balloon".into(),
            ..saved.meta.request(image())
        };
        let err = resume(
            &models,
            &other,
            &path,
            &Device::Cpu,
            &GenerateOptions::default(),
            |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("prompt"), "{err}");
    }
}
