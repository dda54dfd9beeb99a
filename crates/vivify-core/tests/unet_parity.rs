//! I2VGenXLUNet against diffusers 0.42.1 (f32, CPU): each module kind alone on the inputs diffusers
//! gave it, then the whole forward pass, for two tiny configs (tools/parity/unet_fixtures.py).

mod common;

use candle_core::{DType, Device, Module, Tensor};
use common::{Fixture, assert_close, fixtures_dir};
use vivify_core::models::unet::blocks::BlockInputs;
use vivify_core::models::unet::{I2VGenXLUNet, UNetInputs};
use vivify_core::nn::compute::ComputeOptions;
use vivify_core::nn::embeddings::timestep_features;

/// Relative L2 error allowed against diffusers in f32.
const TOL: f64 = 1e-5;
const CASES: [&str; 2] = ["tiny_a", "tiny_b"];

fn load(case: &str) -> (I2VGenXLUNet, Fixture) {
    let dir = fixtures_dir().join("unet").join(case);
    let unet =
        I2VGenXLUNet::load(&dir.join("unet"), Some("fp16"), DType::F32, &Device::Cpu).unwrap();
    let fixture = Fixture::load(&dir.join("activations.safetensors"));
    (unet, fixture)
}

fn for_each_case(test: impl Fn(&str, &I2VGenXLUNet, &Fixture)) {
    for case in CASES {
        let (unet, fx) = load(case);
        test(case, &unet, &fx);
    }
}

#[test]
fn time_and_fps_embeddings() {
    for_each_case(|case, unet, fx| {
        let t: Vec<f32> = fx.tensor("time_proj.in.0").to_vec1().unwrap();
        let dim = unet.config.block_out_channels[0];
        let features = timestep_features(&t, dim, &Device::Cpu).unwrap();
        assert_close(
            &format!("{case} time_proj"),
            &features,
            &fx.tensor("time_embedding.in.0"),
            TOL,
        );
        let out = unet
            .time_embedding
            .forward(&fx.tensor("time_embedding.in.0"))
            .unwrap();
        assert_close(
            &format!("{case} time_embedding"),
            &out,
            &fx.tensor("time_embedding.out"),
            TOL,
        );
        let out = unet
            .fps_embedding
            .forward(&fx.tensor("fps_embedding.in.0"))
            .unwrap();
        assert_close(
            &format!("{case} fps_embedding"),
            &out,
            &fx.tensor("fps_embedding.out"),
            TOL,
        );
    });
}

#[test]
fn context_embeddings() {
    for_each_case(|case, unet, fx| {
        let out = unet
            .context_embedding
            .forward(&fx.tensor("context_embedding.in.0"))
            .unwrap();
        let reference = fx.tensor("context_embedding.out");
        assert_close(
            &format!("{case} context_embedding"),
            &out.flatten_from(1).unwrap(),
            &reference,
            TOL,
        );

        // Includes the adaptive pool: 8x8 -> 32x32 grows, 11x20 -> 32x32 grows with uneven bins.
        let out = unet
            .image_latents_context_embedding
            .forward(&fx.tensor("image_latents_context_embedding.in.0"))
            .unwrap();
        let reference = fx.tensor("image_latents_context_embedding.out");
        let (b, c, h, w) = reference.dims4().unwrap();
        let reference = reference
            .permute((0, 2, 3, 1))
            .unwrap()
            .reshape((b, h * w, c))
            .unwrap();
        assert_close(
            &format!("{case} image_latents_context_embedding"),
            &out,
            &reference,
            TOL,
        );
    });
}

#[test]
fn image_latent_branch() {
    for_each_case(|case, unet, fx| {
        let out = unet
            .image_latents_proj_in
            .forward(&fx.tensor("image_latents_proj_in.in.0"))
            .unwrap();
        assert_close(
            &format!("{case} image_latents_proj_in"),
            &out,
            &fx.tensor("image_latents_proj_in.out"),
            TOL,
        );
        let out = unet
            .image_latents_temporal_encoder
            .forward(&fx.tensor("image_latents_temporal_encoder.in.0"))
            .unwrap();
        let reference = fx.tensor("image_latents_temporal_encoder.out");
        assert_close(
            &format!("{case} image_latents_temporal_encoder"),
            &out,
            &reference,
            TOL,
        );
    });
}

#[test]
fn conv_in_and_transformer_in() {
    for_each_case(|case, unet, fx| {
        let out = unet.conv_in.forward(&fx.tensor("conv_in.in.0")).unwrap();
        assert_close(
            &format!("{case} conv_in"),
            &out,
            &fx.tensor("conv_in.out"),
            TOL,
        );
        let frames: usize = fx.meta("transformer_in.in.num_frames");
        let out = unet
            .transformer_in
            .forward(
                &fx.tensor("transformer_in.in.0"),
                frames,
                ComputeOptions::default(),
            )
            .unwrap();
        assert_close(
            &format!("{case} transformer_in"),
            &out,
            &fx.tensor("transformer_in.out.0"),
            TOL,
        );
    });
}

#[test]
fn layer_modules() {
    for_each_case(|case, unet, fx| {
        let frames: usize = fx.meta("down_blocks.0.in.num_frames");
        let layer = &unet.down_blocks[0].layers[0];
        let p = "down_blocks.0";

        let out = layer
            .resnet
            .forward(
                &fx.tensor(&format!("{p}.resnets.0.in.0")),
                &fx.tensor(&format!("{p}.resnets.0.in.1")),
            )
            .unwrap();
        assert_close(
            &format!("{case} ResnetBlock2D"),
            &out,
            &fx.tensor(&format!("{p}.resnets.0.out")),
            TOL,
        );

        let out = layer
            .temp_conv
            .forward(&fx.tensor(&format!("{p}.temp_convs.0.in.0")), frames)
            .unwrap();
        assert_close(
            &format!("{case} TemporalConvLayer"),
            &out,
            &fx.tensor(&format!("{p}.temp_convs.0.out")),
            TOL,
        );

        let (spatial, temporal) = layer.attention.as_ref().expect("block 0 has attention");
        let out = spatial
            .forward(
                &fx.tensor(&format!("{p}.attentions.0.in.0")),
                &fx.tensor(&format!("{p}.attentions.0.in.encoder_hidden_states")),
                ComputeOptions::default(),
            )
            .unwrap();
        assert_close(
            &format!("{case} Transformer2DModel"),
            &out,
            &fx.tensor(&format!("{p}.attentions.0.out.0")),
            TOL,
        );

        let out = temporal
            .forward(
                &fx.tensor(&format!("{p}.temp_attentions.0.in.0")),
                frames,
                ComputeOptions::default(),
            )
            .unwrap();
        assert_close(
            &format!("{case} TransformerTemporalModel"),
            &out,
            &fx.tensor(&format!("{p}.temp_attentions.0.out.0")),
            TOL,
        );

        let down = unet.down_blocks[0].downsampler.as_ref().unwrap();
        let out = down
            .forward(&fx.tensor(&format!("{p}.downsamplers.0.in.0")))
            .unwrap();
        assert_close(
            &format!("{case} Downsample2D"),
            &out,
            &fx.tensor(&format!("{p}.downsamplers.0.out")),
            TOL,
        );

        // A resnet whose channel count changes (1x1 shortcut).
        let layer = &unet.up_blocks[1].layers[0];
        let out = layer
            .resnet
            .forward(
                &fx.tensor("up_blocks.1.resnets.0.in.0"),
                &fx.tensor("up_blocks.1.resnets.0.in.1"),
            )
            .unwrap();
        assert_close(
            &format!("{case} ResnetBlock2D shortcut"),
            &out,
            &fx.tensor("up_blocks.1.resnets.0.out"),
            TOL,
        );

        // Upsamplers, with an explicit output size where the fixture has one (11x20 case).
        for i in 0..2 {
            let key = format!("up_blocks.{i}.upsamplers.0");
            let size: Option<(usize, usize)> = fx.has_meta(&format!("{key}.in.1")).then(|| {
                let s: Vec<usize> = fx.meta(&format!("{key}.in.1"));
                (s[0], s[1])
            });
            let up = unet.up_blocks[i].upsampler.as_ref().unwrap();
            let out = up
                .forward(&fx.tensor(&format!("{key}.in.0")), size)
                .unwrap();
            assert_close(
                &format!("{case} Upsample2D {size:?}"),
                &out,
                &fx.tensor(&format!("{key}.out")),
                TOL,
            );
        }
    });
}

fn block_inputs<'a>(
    fx: &Fixture,
    key: &str,
    temb: &'a Tensor,
    context: &'a Tensor,
) -> BlockInputs<'a> {
    BlockInputs {
        temb,
        context,
        frames: fx.meta(&format!("{key}.in.num_frames")),
        opts: ComputeOptions::default(),
    }
}

#[test]
fn down_mid_and_up_blocks() {
    for_each_case(|case, unet, fx| {
        let temb = fx.tensor("down_blocks.0.in.temb");
        let context = fx.tensor("down_blocks.0.attentions.0.in.encoder_hidden_states");
        for (i, block) in unet.down_blocks.iter().enumerate() {
            let key = format!("down_blocks.{i}");
            let inputs = block_inputs(fx, &key, &temb, &context);
            let (out, skips) = block
                .forward(&fx.tensor(&format!("{key}.in.hidden_states")), inputs)
                .unwrap();
            assert_close(
                &format!("{case} {key}"),
                &out,
                &fx.tensor(&format!("{key}.out.0")),
                TOL,
            );
            for (j, skip) in skips.iter().enumerate() {
                assert_close(
                    &format!("{case} {key} skip {j}"),
                    skip,
                    &fx.tensor(&format!("{key}.out.1.{j}")),
                    TOL,
                );
            }
        }

        let inputs = block_inputs(fx, "mid_block", &temb, &context);
        let out = unet
            .mid_block
            .forward(&fx.tensor("mid_block.in.0"), inputs)
            .unwrap();
        assert_close(
            &format!("{case} mid_block"),
            &out,
            &fx.tensor("mid_block.out"),
            TOL,
        );

        for (i, block) in unet.up_blocks.iter().enumerate() {
            let key = format!("up_blocks.{i}");
            let inputs = block_inputs(fx, &key, &temb, &context);
            let skips: Vec<Tensor> = (0..block.layers.len())
                .map(|j| fx.tensor(&format!("{key}.in.res_hidden_states_tuple.{j}")))
                .collect();
            let size_key = format!("{key}.in.upsample_size");
            let size = fx.has_meta(&size_key).then(|| {
                let s: Vec<usize> = fx.meta(&size_key);
                (s[0], s[1])
            });
            let out = block
                .forward(
                    &fx.tensor(&format!("{key}.in.hidden_states")),
                    &skips,
                    inputs,
                    size,
                )
                .unwrap();
            assert_close(
                &format!("{case} {key}"),
                &out,
                &fx.tensor(&format!("{key}.out")),
                TOL,
            );
        }
    });
}

#[test]
fn whole_unet_forward() {
    for_each_case(|case, unet, fx| {
        let sample = fx.tensor("unet.in.sample");
        let image_latents = fx.tensor("unet.in.image_latents");
        let image_embeddings = fx.tensor("unet.in.image_embeddings");
        let encoder_hidden_states = fx.tensor("unet.in.encoder_hidden_states");
        let inputs = UNetInputs {
            sample: &sample,
            timestep: fx.meta("unet.in.timestep"),
            fps: fx.meta("unet.in.fps"),
            image_latents: &image_latents,
            image_embeddings: &image_embeddings,
            encoder_hidden_states: &encoder_hidden_states,
            options: ComputeOptions::default(),
        };
        let out = unet.forward(&inputs).unwrap();
        assert_close(
            &format!("{case} I2VGenXLUNet"),
            &out,
            &fx.tensor("unet.out"),
            TOL,
        );
    });
}
