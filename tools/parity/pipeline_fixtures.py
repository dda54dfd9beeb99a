"""Reference fixtures for vivify's end-to-end parity with diffusers 0.42.1's I2VGenXLPipeline,
computed on the CPU in f32 (transformers 5.24, torch 2.11; deterministic: fixed seeds).

Run from the repository root (after tools/parity/setup.sh):
    tools/parity/.venv/bin/python tools/parity/pipeline_fixtures.py

Writes tests/fixtures/pipeline/:
  model/                    a tiny random I2VGen-XL pipeline in the PUBLISHED ali-vilab/i2vgen-xl
                            layout: model_index.json; unet/ (I2VGenXLUNet), vae/ (AutoencoderKL, 4
                            blocks so that the spatial factor is 8), text_encoder/ (CLIPTextModel,
                            tensor names `text_model.*`), image_encoder/
                            (CLIPVisionModelWithProjection, `vision_model.*` + `visual_projection`),
                            all four as fp16 variant files only (`diffusion_pytorch_model.fp16.
                            safetensors`, `model.fp16.safetensors`); tokenizer/ in the slow layout
                            (vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json;
                            no tokenizer.json); scheduler/scheduler_config.json (the published DDIM
                            config); feature_extractor/preprocessor_config.json (the published one)
  input.png                 the conditioning image (96x64 synthetic RGB, non-square)
  case.json                 prompt, negative_prompt, width, height, num_frames,
                            num_inference_steps, guidance_scale, target_fps, decode_chunk_size
  latents.safetensors       `latents`: the initial noise, f32 (1, 4, F, H/8, W/8), passed to the
                            pipeline as `latents=`
  expected/0000.png ...     the frames exactly as the pipeline returns them with output_type="pil"
                            (diffusers' postprocess: u8 = round(clamp(x / 2 + 0.5, 0, 1) * 255); the
                            script checks that rule against the decoded tensor)
  expected_latents.safetensors
                            `latents`: the final latents, f32 (1, 4, F, H/8, W/8), captured as the
                            argument of `pipe.decode_latents` (the output of the last DDIM step,
                            before the division by the VAE scaling factor)
  expected_intermediates.safetensors
                            for debugging, captured with a forward hook on the UNet's first call:
                            `prompt_embeds` (2, 77, C) in batch order [negative, positive],
                            `image_embeddings` (2, 1, C) (the negative row is zeros),
                            `image_latents` (2, 4, F, H/8, W/8) (scaled by the VAE factor), `fps`

Weights: every parameter is re-randomised (matrices uniform ±1/sqrt(fan_in), norm weights 1±0.1,
everything else ±0.1, as unet_fixtures.py does: the library inits zero some layers, which would
hide bugs), rounded to f16 and stored as f16; the pipeline is loaded with
`from_pretrained(model, variant="fp16", torch_dtype=torch.float32)`, so the reference runs in f32
on exactly the stored values (checked: every loaded tensor equals the stored one).

The tokenizer is a byte-level CLIP vocabulary without merges: the 256 bytes_to_unicode characters,
the same each with "</w>", then "<|startoftext|>" (512) and "<|endoftext|>" (513); merges.txt holds
only the "#version: 0.2" header. transformers' CLIPTokenizer loads it and tokenizes one token per
character. The pad token is "!" (id 0), as published.

What the harness patches, and why (see `patch_pipeline`):
  (a) diffusers encodes the conditioning image with `vae.encode(image).latent_dist.sample()`,
      which draws noise; vivify uses the posterior mean, so
      `DiagonalGaussianDistribution.sample` is patched to return `self.mean`.
  (b) With its default clip_skip=1, `encode_prompt` applies
      `self.text_encoder.text_model.final_layer_norm` to hidden_states[-2]; transformers 5's
      CLIPTextModel no longer has a `text_model` attribute (its modules sit at the top level), so
      that line raises AttributeError. The harness sets `text_encoder.text_model` to a plain
      namespace holding `final_layer_norm` (object.__setattr__, so no submodule is registered and
      the state dict is unchanged), and checks that the recorded prompt embeddings equal
      final_layer_norm(hidden_states[-2]) computed directly.
  (c) Nothing else was needed with diffusers 0.42.1 / transformers 5.24 / torch 2.11.

Also used by full_size_check.py (the same construction and harness at the published sizes).
"""
import gzip
import json
import os
import shutil
import sys
import tempfile
import types

import numpy as np
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tokenizer_fixtures import PUBLISHED_CONFIG, PUBLISHED_MAP, build_vocab_and_merges, bytes_to_unicode  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")
OUT = os.path.join(ROOT, "pipeline")

MODEL_INDEX = {
    "_class_name": "I2VGenXLPipeline",
    "_diffusers_version": "0.25.0.dev0",
    "feature_extractor": ["transformers", "CLIPImageProcessor"],
    "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
    "scheduler": ["diffusers", "DDIMScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "I2VGenXLUNet"],
    "vae": ["diffusers", "AutoencoderKL"],
}

SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "_diffusers_version": "0.25.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "squaredcos_cap_v2",
    "beta_start": 0.00085,
    "clip_sample": False,
    "clip_sample_range": 1.0,
    "dynamic_thresholding_ratio": 0.995,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "rescale_betas_zero_snr": True,
    "sample_max_value": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 1,
    "thresholding": False,
    "timestep_spacing": "leading",
    "trained_betas": None,
}

FEATURE_EXTRACTOR = {
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor",
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}

# The tiny pipeline (UNet channels (8, 8, 8, 8) rather than (8, 16, 16, 16) to keep the fixtures
# under 600 KB; unet_fixtures.py covers channel changes between blocks). The VAE needs 4 blocks: the pipeline's vae_scale_factor is
# 2 ** (len(block_out_channels) - 1) and vivify (like the published model) assumes 8.
TINY_UNET = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                 attention_head_dim=4, cross_attention_dim=16)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4,
                act_fn="silu", sample_size=64, scaling_factor=0.18125)
TINY_TEXT = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 hidden_act="gelu", max_position_embeddings=77, vocab_size=514,
                 bos_token_id=512, eos_token_id=513, pad_token_id=0, projection_dim=16)
TINY_VISION = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                   patch_size=14, image_size=224, projection_dim=16, hidden_act="gelu")

TINY_CASE = dict(prompt="A red fox jumps over a lazy dog, sunset.",
                 negative_prompt="blurry, low quality",
                 width=64, height=48, num_frames=3, num_inference_steps=3, guidance_scale=9.0,
                 target_fps=16, decode_chunk_size=2)


def randomize(model, gen):
    """Every parameter random: matrices ±1/sqrt(fan_in), norm weights 1±0.1, everything else ±0.1
    (as unet_fixtures.py). Drawn in f32 then rounded to f16 in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                bound = 1.0 / (p[0].numel() ** 0.5)
                v = (torch.rand(p.shape, generator=gen) * 2 - 1) * bound
            elif "norm" in name and name.endswith("weight"):
                v = 1 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1
            else:
                v = (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1
            p.copy_(v.half().float())


def byte_vocab():
    """512 byte tokens (bare and with "</w>") + BOS + EOS; no merges."""
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, []


def write_tokenizer(directory, vocab, merges):
    """The slow (vocab.json + merges.txt) layout of the published tokenizer/ directory."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as fh:
        json.dump(vocab, fh, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as fh:
        fh.write("\n".join(["#version: 0.2"] + list(merges)) + "\n")
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as fh:
        json.dump(PUBLISHED_CONFIG, fh, indent=2, sort_keys=True)
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as fh:
        json.dump(PUBLISHED_MAP, fh, indent=2, sort_keys=True)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def state_dict_f16(model, prefix=""):
    sd = model.state_dict()
    names = {n for n, _ in model.named_parameters()}
    extra = set(sd) - names
    assert not extra, f"persistent buffers would be saved: {sorted(extra)[:5]}"
    return {prefix + k: v.detach().half().contiguous() for k, v in sd.items()}


def meta_build(cls, *args, meta=False, **kwargs):
    """Builds a module; with meta=True skips the library init (slow at the published sizes):
    built on the meta device, then given uninitialised CPU storage (every parameter is then
    overwritten by randomize, and state_dict_f16 checks that no persistent buffer is saved)."""
    if not meta:
        return cls(*args, **kwargs).eval()
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    return model.to_empty(device="cpu").eval()


def write_model(model_dir, unet_cfg, vae_cfg, text_cfg, vision_cfg, vocab, merges, seed, meta=False,
                log=print):
    """Random weights (rounded to f16) for the four models, saved as fp16 variants in the
    published layout, plus tokenizer, scheduler, feature extractor and model_index.json."""
    from diffusers import AutoencoderKL, I2VGenXLUNet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    shutil.rmtree(model_dir, ignore_errors=True)
    os.makedirs(model_dir)
    write_json(os.path.join(model_dir, "model_index.json"), MODEL_INDEX)
    write_json(os.path.join(model_dir, "scheduler", "scheduler_config.json"), SCHEDULER)
    write_json(os.path.join(model_dir, "feature_extractor", "preprocessor_config.json"), FEATURE_EXTRACTOR)
    write_tokenizer(os.path.join(model_dir, "tokenizer"), vocab, merges)
    gen = torch.Generator().manual_seed(seed)

    for name, cls, cfg in (("unet", I2VGenXLUNet, unet_cfg), ("vae", AutoencoderKL, vae_cfg)):
        model = meta_build(cls, meta=meta, **cfg)
        randomize(model, gen)
        sd = state_dict_f16(model)
        d = os.path.join(model_dir, name)
        os.makedirs(d)
        model.save_config(d)
        save_file(sd, os.path.join(d, "diffusion_pytorch_model.fp16.safetensors"), metadata={"format": "pt"})
        log(f"{name}: {sum(v.numel() for v in sd.values())} parameters")
        del model, sd

    for name, cls, conf, prefix in (
            ("text_encoder", CLIPTextModel, CLIPTextConfig(**text_cfg), "text_model."),
            ("image_encoder", CLIPVisionModelWithProjection, CLIPVisionConfig(**vision_cfg), "")):
        model = meta_build(cls, conf, meta=meta)
        randomize(model, gen)
        sd = state_dict_f16(model)
        if prefix:
            # transformers 5 saves CLIPTextModel with bare names (`embeddings.*`); the published
            # checkpoint (transformers 4) has `text_model.embeddings.*`.
            assert not any(k.startswith(prefix) for k in sd)
            sd = {prefix + k: v for k, v in sd.items()}
        else:
            assert all(k.startswith("vision_model.") or k == "visual_projection.weight" for k in sd)
        d = os.path.join(model_dir, name)
        os.makedirs(d)
        conf.architectures = [cls.__name__]
        conf.save_pretrained(d)
        save_file(sd, os.path.join(d, "model.fp16.safetensors"), metadata={"format": "pt"})
        log(f"{name}: {sum(v.numel() for v in sd.values())} parameters")
        del model, sd


def synthetic_image(width, height):
    """Deterministic RGB test image: gradients, a disc, a rectangle and a few lines."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 255 * x / max(width - 1, 1)
    g = 255 * y / max(height - 1, 1)
    b = 127.5 + 127.5 * np.sin(x / width * 6.0 + y / height * 3.0)
    img = Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse([width * 0.15, height * 0.2, width * 0.45, height * 0.65], fill=(240, 200, 30))
    d.rectangle([width * 0.55, height * 0.5, width * 0.85, height * 0.85], fill=(20, 60, 200))
    for i in range(0, width, max(width // 8, 1)):
        d.line([i, 0, width - 1 - i, height - 1], fill=(255, 255, 255), width=1)
    return img


WEIGHT_FILES = {"unet": "diffusion_pytorch_model.fp16.safetensors",
                "vae": "diffusion_pytorch_model.fp16.safetensors",
                "text_encoder": "model.fp16.safetensors", "image_encoder": "model.fp16.safetensors"}


def load_pipeline(model_dir, check=True):
    """Loads the pipeline as vivify's users would (fp16 variant, computed in f32) and checks every
    loaded tensor against the stored file, read one tensor at a time (a name transformers or
    diffusers did not map would otherwise be silently re-initialised)."""
    from diffusers import I2VGenXLPipeline
    from safetensors import safe_open
    pipe = I2VGenXLPipeline.from_pretrained(model_dir, variant="fp16", torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if check:
        for name, fname in WEIGHT_FILES.items():
            loaded = getattr(pipe, name).state_dict()
            prefix = "text_model." if name == "text_encoder" else ""
            with safe_open(os.path.join(model_dir, name, fname), "pt") as fh:
                keys = list(fh.keys())
                names = {k[len(prefix):] for k in keys}
                assert names == set(loaded), f"{name}: loaded names differ: {sorted(names ^ set(loaded))[:5]}"
                for k in keys:
                    t = loaded[k[len(prefix):]]
                    assert t.dtype == torch.float32, (name, k, t.dtype)
                    assert torch.equal(t, fh.get_tensor(k).float()), f"{name}.{k} differs after loading"
    return pipe


def patch_pipeline(pipe):
    """The harness patches (a) and (b) of the module docstring."""
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    # (a) posterior mean instead of a sample for the image latents.
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean

    # (b) `text_encoder.text_model.final_layer_norm` for clip_skip. A plain namespace, set past
    # nn.Module.__setattr__, so no submodule (and no state-dict entry) is added.
    te = pipe.text_encoder
    assert not hasattr(te, "text_model"), "transformers has text_model again: drop patch (b)"
    object.__setattr__(te, "text_model", types.SimpleNamespace(final_layer_norm=te.final_layer_norm))
    assert "text_model" not in dict(te.named_modules())


def run_case(pipe, image, case, latents):
    """Runs the pipeline; returns (frames as PIL images, final latents, intermediates)."""
    captured = {}

    def unet_hook(module, args, kwargs):
        if "prompt_embeds" not in captured:
            captured["prompt_embeds"] = kwargs["encoder_hidden_states"].detach().clone()
            captured["image_embeddings"] = kwargs["image_embeddings"].detach().clone()
            captured["image_latents"] = kwargs["image_latents"].detach().clone()
            captured["fps"] = kwargs["fps"].detach().clone()

    handle = pipe.unet.register_forward_pre_hook(unet_hook, with_kwargs=True)
    original_decode = pipe.decode_latents

    def decode_latents(lat, decode_chunk_size=None):
        captured["latents"] = lat.detach().clone()
        video = original_decode(lat, decode_chunk_size=decode_chunk_size)
        captured["video"] = video.detach().clone()
        return video

    pipe.decode_latents = decode_latents
    try:
        with torch.no_grad():
            out = pipe(prompt=case["prompt"], negative_prompt=case["negative_prompt"], image=image,
                       width=case["width"], height=case["height"], num_frames=case["num_frames"],
                       num_inference_steps=case["num_inference_steps"],
                       guidance_scale=case["guidance_scale"], target_fps=case["target_fps"],
                       decode_chunk_size=case["decode_chunk_size"], latents=latents.clone(),
                       eta=0.0, output_type="pil", clip_skip=1)
    finally:
        handle.remove()
        del pipe.decode_latents
    frames = out.frames[0]
    assert len(frames) == case["num_frames"]

    # The frames are vivify's rule applied to the decoded tensor.
    video = captured["video"][0].permute(1, 2, 3, 0)  # (F, H, W, 3)
    rule = (((video / 2 + 0.5).clamp(0, 1) * 255).round()).to(torch.uint8).numpy()
    for i, frame in enumerate(frames):
        assert frame.size == (case["width"], case["height"]), frame.size
        assert np.array_equal(np.asarray(frame), rule[i]), f"frame {i} differs from the u8 rule"

    # Patch (b) check: the prompt embeddings are final_layer_norm(hidden_states[-2]).
    te, tok = pipe.text_encoder, pipe.tokenizer
    for row, text in enumerate((case["negative_prompt"], case["prompt"])):
        ids = tok(text, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        with torch.no_grad():
            hs = te(ids, output_hidden_states=True).hidden_states
            want = te.final_layer_norm(hs[-2])
        assert torch.equal(captured["prompt_embeds"][row], want[0]), f"prompt embeds row {row}"
    return frames, captured


def write_outputs(out_dir, image, case, latents, frames, captured):
    image.save(os.path.join(out_dir, "input.png"))
    write_json(os.path.join(out_dir, "case.json"), case)
    save_file({"latents": latents.contiguous()}, os.path.join(out_dir, "latents.safetensors"))
    save_file({"latents": captured["latents"].float().contiguous()},
              os.path.join(out_dir, "expected_latents.safetensors"))
    save_file({k: captured[k].float().contiguous() if k != "fps" else captured[k].contiguous()
               for k in ("prompt_embeds", "image_embeddings", "image_latents", "fps")},
              os.path.join(out_dir, "expected_intermediates.safetensors"))
    exp = os.path.join(out_dir, "expected")
    shutil.rmtree(exp, ignore_errors=True)
    os.makedirs(exp)
    for i, frame in enumerate(frames):
        frame.save(os.path.join(exp, f"{i:04d}.png"))


def initial_latents(case, seed, channels=4, factor=8):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, case["num_frames"], case["height"] // factor, case["width"] // factor,
                       generator=gen)


def main():
    torch.manual_seed(0)
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    model_dir = os.path.join(OUT, "model")
    vocab, merges = byte_vocab()
    write_model(model_dir, TINY_UNET, TINY_VAE, TINY_TEXT, TINY_VISION, vocab, merges, seed=2024)
    pipe = load_pipeline(model_dir)
    patch_pipeline(pipe)
    case = dict(TINY_CASE)
    image = synthetic_image(96, 64)
    latents = initial_latents(case, seed=7)
    frames, captured = run_case(pipe, image, case, latents)
    write_outputs(OUT, image, case, latents, frames, captured)
    ids = pipe.tokenizer(case["prompt"]).input_ids
    print(f"prompt ids ({len(ids)}): {ids}")
    print(f"final latents: mean {captured['latents'].mean():.4f} std {captured['latents'].std():.4f}")
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"pipeline fixtures: {size / 1e3:.1f} KB")


if __name__ == "__main__":
    main()
