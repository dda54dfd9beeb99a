//! The denoising loop (DDIM, v-prediction, classifier-free guidance) against the loop of
//! diffusers' I2VGenXLPipeline over the same tiny UNet.

mod common;

use candle_core::{DType, Device};
use common::{Fixture, assert_close, fixtures_dir};
use vivify_core::models::unet::I2VGenXLUNet;
use vivify_core::nn::compute::ComputeOptions;
use vivify_core::pipeline::denoise::{Conditioning, denoise};
use vivify_core::pipeline::plan::ExecutionPlan;
use vivify_core::scheduler::{DdimConfig, DdimScheduler};

#[test]
fn three_guided_steps_match_diffusers() {
    let dir = fixtures_dir().join("unet/tiny_a");
    let unet = I2VGenXLUNet::load(&dir.join("unet"), None, DType::F32, &Device::Cpu).unwrap();
    let fx = Fixture::load(&dir.join("denoise.safetensors"));
    let mut scheduler = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    scheduler.set_timesteps(fx.meta("steps")).unwrap();
    let cond = Conditioning {
        encoder_hidden_states: fx.tensor("cond.encoder_hidden_states"),
        image_embeddings: fx.tensor("cond.image_embeddings"),
        image_latents: fx.tensor("cond.image_latents"),
    };
    // Each memory-bounding strategy alone and all together give diffusers' numbers. Chunks of 3
    // split the 64 spatial tokens, the 5 frames of the temporal layers and the cross-attention
    // queries unevenly.
    let chunked = ComputeOptions {
        attention_query_chunk: Some(3),
        feed_forward_chunk: Some(3),
    };
    let plans = [
        ("plain", ExecutionPlan::default()),
        (
            "sequential guidance",
            ExecutionPlan {
                sequential_guidance: true,
                ..Default::default()
            },
        ),
        (
            "attention chunks",
            ExecutionPlan {
                compute: ComputeOptions {
                    attention_query_chunk: Some(3),
                    ..Default::default()
                },
                ..Default::default()
            },
        ),
        (
            "feed-forward chunks",
            ExecutionPlan {
                compute: ComputeOptions {
                    feed_forward_chunk: Some(3),
                    ..Default::default()
                },
                ..Default::default()
            },
        ),
        (
            "all",
            ExecutionPlan {
                compute: chunked,
                sequential_guidance: true,
            },
        ),
    ];
    for (name, plan) in plans {
        let mut reported = Vec::new();
        let out = denoise(
            &unet,
            &scheduler,
            fx.tensor("latents"),
            &cond,
            fx.meta("guidance"),
            fx.meta::<f32>("fps"),
            plan,
            |p| reported.push((p.step, p.total, p.timestep)),
        )
        .unwrap();
        assert_close(
            &format!("denoise x3, guidance 9, {name}"),
            &out,
            &fx.tensor("out"),
            1e-5,
        );
        assert_eq!(reported, vec![(1, 3, 667), (2, 3, 334), (3, 3, 1)]);
    }
}

#[test]
fn conditioning_rows_must_match_guidance() {
    let dir = fixtures_dir().join("unet/tiny_a");
    let unet = I2VGenXLUNet::load(&dir.join("unet"), None, DType::F32, &Device::Cpu).unwrap();
    let fx = Fixture::load(&dir.join("denoise.safetensors"));
    let mut scheduler = DdimScheduler::new(DdimConfig::i2vgen_xl()).unwrap();
    scheduler.set_timesteps(2).unwrap();
    let cond = Conditioning {
        encoder_hidden_states: fx.tensor("cond.encoder_hidden_states"),
        image_embeddings: fx.tensor("cond.image_embeddings"),
        image_latents: fx.tensor("cond.image_latents"),
    };
    // Two rows but guidance 1 (no CFG): refused up front, naming the field.
    let err = denoise(
        &unet,
        &scheduler,
        fx.tensor("latents"),
        &cond,
        1.0,
        16.0,
        ExecutionPlan::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("`conditioning`"), "{err}");
}
