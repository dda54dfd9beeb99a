"""Reference side of vivify's full-size end-to-end check: random weights at the PUBLISHED
I2VGen-XL configs, run through diffusers 0.42.1's I2VGenXLPipeline on the CPU in f32.

Usage (from the repository root, in the parity environment):
    tools/parity/.venv/bin/python tools/parity/full_size_check.py --out DIR [--bpe PATH]

Nothing it writes is committed (about 5 GB: 4.7 GB of fp16 weights). It writes:
  DIR/model/                  the published ali-vilab/i2vgen-xl layout (model_index.json, unet/,
                              vae/, text_encoder/ with `text_model.*` names, image_encoder/, all as
                              fp16 variant files; tokenizer/ with the real CLIP vocab.json and
                              merges.txt rebuilt from open_clip's bpe_simple_vocab_16e6.txt.gz
                              (tests/fixtures/tokenizer/, as tokenizer_fixtures.py does); scheduler/
                              and feature_extractor/ as published). Skipped when DIR/model/
                              model_index.json exists (delete DIR/model to rebuild).
  DIR/input.png, DIR/case.json, DIR/latents.safetensors (`latents`, f32 (1, 4, 2, 16, 16))
  DIR/expected/0000.png ...   the frames as the pipeline returns them (output_type="pil")
  DIR/expected_latents.safetensors, DIR/expected_intermediates.safetensors
                              as in pipeline_fixtures.py (final latents = the argument of
                              pipe.decode_latents)
The case: 128x128, 2 frames, 2 steps, guidance 9, fps 16, seeded `latents`.

Models: I2VGenXLUNet() defaults (the published UNet, 1,420,469,224 parameters); AutoencoderKL
(128, 256, 512, 512), 4 Down/UpEncoder/DecoderBlock2D, layers_per_block 2, sample_size 768,
scaling_factor 0.18125; CLIPTextModel 1024 hidden, 24 layers, 16 heads, 4096 intermediate,
vocab 49408, gelu; CLIPVisionModelWithProjection ViT-H/14 (1280 hidden, 32 layers, 16 heads,
5120 intermediate, patch 14, image 224, projection 1024, gelu). Weights as pipeline_fixtures.py
(uniform ±1/sqrt(fan_in), norm weights 1±0.1, the rest ±0.1, rounded to f16); the library inits
are skipped (modules built on the meta device, then every parameter filled), which saves minutes.

The weights are created in a child process (so that the printed peak RSS is the generation's
alone). Prints the time of each phase and the peak resident memory of the generation (the
pipeline load, its weight check and the run). Uses the harness patches of pipeline_fixtures.py
(posterior mean for the image latents; `text_encoder.text_model.final_layer_norm` for clip_skip).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import pipeline_fixtures as pf  # noqa: E402
from tokenizer_fixtures import build_vocab_and_merges  # noqa: E402

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BPE = os.path.join(REPO, "tests", "fixtures", "tokenizer", "bpe_simple_vocab_16e6.txt.gz")

UNET = {}  # I2VGenXLUNet() defaults: the published architecture
VAE = dict(in_channels=3, out_channels=3, latent_channels=4,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           block_out_channels=(128, 256, 512, 512), layers_per_block=2, norm_num_groups=32,
           act_fn="silu", sample_size=768, scaling_factor=0.18125, force_upcast=True)
# Token ids in the config as published (SD 2 lineage: 0/2/1; they do not affect the clip_skip=1
# output the pipeline uses).
TEXT = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
            vocab_size=49408, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
            bos_token_id=0, eos_token_id=2, pad_token_id=1)
VISION = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120,
              patch_size=14, image_size=224, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)

CASE = dict(prompt="A red fox jumps over a lazy dog at sunset, cinematic, 4k",
            negative_prompt="blurry, low quality, distorted",
            width=128, height=128, num_frames=2, num_inference_steps=2, guidance_scale=9.0,
            target_fps=16, decode_chunk_size=2)


def peak_rss_gb(who=resource.RUSAGE_SELF):
    return resource.getrusage(who).ru_maxrss / 1024 ** 2  # GiB; ru_maxrss is in KiB on Linux


def make_model(model_dir, bpe):
    t0 = time.time()
    vocab, merges = build_vocab_and_merges(bpe)
    assert len(vocab) == 49408
    log = lambda msg: print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)
    pf.write_model(model_dir, UNET, VAE, TEXT, VISION, vocab, merges, seed=31337, meta=True, log=log)
    log(f"weights written, peak RSS {peak_rss_gb():.2f} GiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--bpe", default=BPE)
    ap.add_argument("--only-model", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    model_dir = os.path.join(out, "model")
    torch.manual_seed(0)
    if args.only_model:
        make_model(model_dir, args.bpe)
        return

    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(model_dir, "model_index.json")):
        t0 = time.time()
        subprocess.run([sys.executable, os.path.abspath(__file__), "--out", out, "--bpe", args.bpe,
                        "--only-model"], check=True)
        print(f"model creation: {time.time() - t0:.1f} s, peak RSS {peak_rss_gb(resource.RUSAGE_CHILDREN):.2f} GiB",
              flush=True)
    else:
        print(f"using the existing model in {model_dir}")

    t0 = time.time()
    pipe = pf.load_pipeline(model_dir)
    t_load = time.time() - t0
    print(f"pipeline load + weight check: {t_load:.1f} s", flush=True)
    pf.patch_pipeline(pipe)
    case = dict(CASE)
    image = pf.synthetic_image(192, 144)
    latents = pf.initial_latents(case, seed=11)
    t1 = time.time()
    frames, captured = pf.run_case(pipe, image, case, latents)
    t_run = time.time() - t1
    pf.write_outputs(out, image, case, latents, frames, captured)
    lat = captured["latents"]
    summary = dict(load_s=round(t_load, 1), generate_s=round(t_run, 1),
                   peak_rss_gib=round(peak_rss_gb(), 2), threads=torch.get_num_threads(),
                   final_latents_mean=round(float(lat.mean()), 5), final_latents_std=round(float(lat.std()), 5))
    print(f"generation (encoders, {case['num_inference_steps']} guided UNet steps, VAE encode/decode): "
          f"{t_run:.1f} s; peak RSS (load + run) {summary['peak_rss_gib']:.2f} GiB")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
