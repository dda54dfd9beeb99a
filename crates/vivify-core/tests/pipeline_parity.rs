//! The whole pipeline against diffusers' I2VGenXLPipeline (tools/parity/pipeline_fixtures.py):
//! a tiny model in the published layout (slow tokenizer files, `text_model.*` names, fp16 files),
//! the same image, prompts, size, steps, guidance, fps and initial latents.

mod common;

use candle_core::{DType, Device};
use common::{Fixture, fixtures_dir, relative_error};
use vivify_core::pipeline::components::Components;
use vivify_core::pipeline::generate::{GenerateOptions, Progress, Stage, generate, generate_from};
use vivify_core::pipeline::models::I2VGenXLModels;
use vivify_core::pipeline::pillow_resize::Rgb8;
use vivify_core::pipeline::plan::{ExecutionPlan, Residency};
use vivify_core::pipeline::preprocess::load_image;
use vivify_core::pipeline::request::GenerationRequest;
use vivify_core::pipeline::store::ModelStore;

/// The acceptance rule: frames within 1 level for at least 99.9% of values and never more than
/// 3 apart; final latents within 1e-3 relative error.
const MAX_LEVEL_DIFF: u8 = 3;
const MIN_WITHIN_ONE: f64 = 0.999;
const LATENTS_TOL: f64 = 1e-3;

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    negative_prompt: String,
    width: usize,
    height: usize,
    num_frames: usize,
    num_inference_steps: usize,
    guidance_scale: f64,
    target_fps: u32,
    decode_chunk_size: usize,
}

/// (max difference, share of values within one level) over all frames.
fn frame_agreement(ours: &[Rgb8], theirs: &[Rgb8]) -> (u8, f64) {
    assert_eq!(ours.len(), theirs.len(), "frame count");
    let (mut max, mut within, mut total) = (0u8, 0usize, 0usize);
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!((a.width, a.height), (b.width, b.height), "frame size");
        for (x, y) in a.data.iter().zip(&b.data) {
            let d = x.abs_diff(*y);
            max = max.max(d);
            within += usize::from(d <= 1);
            total += 1;
        }
    }
    (max, within as f64 / total as f64)
}

#[test]
fn tiny_published_layout_matches_diffusers() {
    let dir = fixtures_dir().join("pipeline");
    let case: Case =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let models = I2VGenXLModels::load(&dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    let latents = Fixture::load(&dir.join("latents.safetensors")).tensor("latents");
    let request = GenerationRequest {
        negative_prompt: case.negative_prompt,
        width: case.width,
        height: case.height,
        frames: case.num_frames,
        steps: case.num_inference_steps,
        guidance: case.guidance_scale,
        fps: case.target_fps,
        latents: Some(latents),
        decode_chunk: case.decode_chunk_size,
        ..GenerationRequest::new(load_image(&dir.join("input.png")).unwrap(), case.prompt)
    };
    let mut stages = Vec::new();
    let mut steps = 0;
    let out = generate(&models, &request, &Device::Cpu, |p| match p {
        Progress::StageFinished(stage, _) => stages.push(stage),
        Progress::Step(_) => steps += 1,
        _ => {}
    })
    .unwrap();
    assert_eq!(
        stages,
        vec![
            Stage::EncodeText,
            Stage::EncodeImage,
            Stage::Denoise,
            Stage::Decode
        ]
    );
    assert_eq!(steps, case.num_inference_steps);

    let expected_latents =
        Fixture::load(&dir.join("expected_latents.safetensors")).tensor("latents");
    let err = relative_error(&out.latents, &expected_latents);
    println!("final latents: relative error {err:.3e}");
    assert!(err <= LATENTS_TOL, "latents differ by {err:.3e}");

    let expected: Vec<Rgb8> = (0..case.num_frames)
        .map(|i| load_image(&dir.join(format!("expected/{i:04}.png"))).unwrap())
        .collect();
    let (max, within) = frame_agreement(&out.frames, &expected);
    println!(
        "frames: max difference {max}, {:.4}% of values within one level",
        within * 100.0
    );
    assert!(
        max <= MAX_LEVEL_DIFF && within >= MIN_WITHIN_ONE,
        "max {max}, within one {within}"
    );

    // Each component loaded from the directory when its stage starts (the fp16 files
    // memory-mapped), or also the UNet's blocks streamed from its file: the same run.
    let store = ModelStore::dir(&dir.join("model"), DType::F32, &Device::Cpu).unwrap();
    for residency in [
        Residency::Staged,
        Residency::StreamedUnet { resident_blocks: 1 },
    ] {
        let req = GenerationRequest {
            plan: ExecutionPlan {
                residency,
                ..request.plan
            },
            ..request.clone()
        };
        let staged = generate_from(
            Components::Store(&store),
            &req,
            &Device::Cpu,
            &GenerateOptions::default(),
            |_| {},
        )
        .unwrap();
        assert_eq!(
            relative_error(&staged.latents, &out.latents),
            0.0,
            "{residency:?}"
        );
        assert!(
            staged
                .frames
                .iter()
                .zip(&out.frames)
                .all(|(a, b)| a.data == b.data),
            "{residency:?}: frames differ"
        );
    }
}
