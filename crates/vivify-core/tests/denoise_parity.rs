//! The denoising loop (DDIM, v-prediction, classifier-free guidance) against the loop of
//! diffusers' I2VGenXLPipeline over the same tiny UNet.

mod common;

use candle_core::{DType, Device};
use common::{Fixture, assert_close, fixtures_dir};
use vivify_core::models::unet::streaming::StreamedUNet;
use vivify_core::models::unet::{I2VGenXLUNet, open_checkpoint};
use vivify_core::nn::compute::ComputeOptions;
use vivify_core::pipeline::denoise::{Conditioning, denoise};
use vivify_core::pipeline::plan::{ExecutionPlan, Residency};
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
    // Each memory-bounding strategy alone and all together give diffusers' numbers. The chunk
    // sizes split unevenly: 64 spatial tokens and cross-attention queries by 3, 5 frames by 3
    // (temporal tokens) and 4 (spatial passes), 2 videos x 64 pixel columns by 7, batch·heads by 5,
    // 2 x 5 frames of the per-frame convolutions by 3.
    let compute = |f: fn(&mut ComputeOptions)| {
        let mut c = ComputeOptions::default();
        f(&mut c);
        ExecutionPlan {
            compute: c,
            ..Default::default()
        }
    };
    let all = ComputeOptions {
        attention_query_chunk: Some(3),
        attention_head_chunk: Some(5),
        feed_forward_chunk: Some(3),
        spatial_frame_chunk: Some(4),
        temporal_pixel_chunk: Some(7),
        conv_frame_chunk: Some(3),
        vae_row_band: None,
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
            "attention query chunks",
            compute(|c| c.attention_query_chunk = Some(3)),
        ),
        (
            "attention batch-head slices",
            compute(|c| c.attention_head_chunk = Some(5)),
        ),
        (
            "feed-forward chunks",
            compute(|c| c.feed_forward_chunk = Some(3)),
        ),
        (
            "spatial frame chunks",
            compute(|c| c.spatial_frame_chunk = Some(4)),
        ),
        (
            "temporal pixel chunks",
            compute(|c| c.temporal_pixel_chunk = Some(7)),
        ),
        (
            "convolution frame chunks",
            compute(|c| c.conv_frame_chunk = Some(3)),
        ),
        (
            "all",
            ExecutionPlan {
                compute: all,
                sequential_guidance: true,
                ..Default::default()
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

    // The UNet streamed block by block from its memory-mapped checkpoint, with one or two
    // blocks resident, gives the same numbers.
    let (config, host) =
        open_checkpoint(&dir.join("unet"), None, DType::F32, &Device::Cpu).unwrap();
    for resident_blocks in [1, 2] {
        let streamed = StreamedUNet::new(&config, host.clone(), resident_blocks).unwrap();
        let plan = ExecutionPlan {
            residency: Residency::StreamedUnet { resident_blocks },
            ..Default::default()
        };
        let out = denoise(
            &streamed,
            &scheduler,
            fx.tensor("latents"),
            &cond,
            fx.meta("guidance"),
            fx.meta::<f32>("fps"),
            plan,
            |_| {},
        )
        .unwrap();
        assert_close(
            &format!("denoise x3, guidance 9, UNet streamed with {resident_blocks} resident"),
            &out,
            &fx.tensor("out"),
            1e-5,
        );
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
