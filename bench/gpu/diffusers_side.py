"""diffusers' side of bench/gpu/run.sh, on the GPU in fp16, on the same weights vivify loads.

Usage: python diffusers_side.py --work DIR [--steps 10] [--iters 3] [--cases 512x512x16,...]

  1. DIR/model: random weights at the published I2VGen-XL configs in the published layout, made by
     tools/parity/full_size_check.py --only-model (skipped when present).
  2. One UNet step on the guidance batch of 2 per case: best and median seconds of --iters after a
     warm-up, and the peak of torch.cuda.max_memory_allocated (all four models resident).
  3. End to end per case through I2VGenXLPipeline (the harness patches of
     tools/parity/pipeline_fixtures.py: posterior mean, clip_skip=1), --steps DDIM steps, guidance
     9, fps 16, decode chunk 1, seeded `latents`: seconds, peak memory, the frames as PNG and the
     final latents (f32) under DIR/diffusers_WxHxF/, with the inputs vivify needs (input.png,
     latents.safetensors, case.json).
One JSON line per measurement on stdout.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch

REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(REPO, "tools", "parity"))
import pipeline_fixtures as pf  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

PROMPT = "A red fox jumps over a lazy dog at sunset, cinematic, 4k"
NEGATIVE = "blurry, low quality, distorted"


def patch_pipeline(pipe):
    """pipeline_fixtures' harness patches, tolerant of the device's transformers version:
    (a) the posterior mean for the image latents, (b) `text_model.final_layer_norm` for
    clip_skip where transformers 5 no longer has `text_model`."""
    import types
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    DiagonalGaussianDistribution.sample = lambda self, generator=None: self.mean
    te = pipe.text_encoder
    if not hasattr(te, "text_model"):
        object.__setattr__(te, "text_model", types.SimpleNamespace(final_layer_norm=te.final_layer_norm))


def gib(x):
    return round(x / 2 ** 30, 3)


def emit(**rec):
    print(json.dumps({"impl": "diffusers", **rec}), flush=True)


DEVICE = "cuda"


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak():
    return torch.cuda.max_memory_allocated() if DEVICE == "cuda" else None


def timed(fn, iters):
    fn()
    sync()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return min(ts), sorted(ts)[len(ts) // 2]


def unet_step_fn(unet, w, h, f, device=None):
    """One UNet call on the guidance batch of 2 at w x h x f with random inputs, as a callable
    (also used by torch_profile.py)."""
    device = device or DEVICE
    dt = unet.dtype
    lh, lw = h // 8, w // 8
    x = torch.randn(2, 4, f, lh, lw, device=device, dtype=dt)
    img_lat = torch.randn(2, 4, f, lh, lw, device=device, dtype=dt)
    ctx = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dt)
    emb = torch.randn(2, unet.config.cross_attention_dim, device=device, dtype=dt)
    fps = torch.tensor([16, 16], device=device)
    t = torch.tensor(500, device=device)
    return lambda: unet(x, t, encoder_hidden_states=ctx, fps=fps, image_latents=img_lat,
                        image_embeddings=emb, return_dict=False)[0]


@torch.no_grad()
def unet_step(pipe, w, h, f, iters):
    step = unet_step_fn(pipe.unet, w, h, f)
    reset_peak()
    tmin, tmed = timed(step, iters)
    emit(event="unet_step", w=w, h=h, frames=f, sec_min=round(tmin, 4), sec_med=round(tmed, 4),
         peak_bytes=peak())


@torch.no_grad()
def end_to_end(pipe, work, w, h, f, steps):
    case = dict(prompt=PROMPT, negative_prompt=NEGATIVE, width=w, height=h, num_frames=f,
                num_inference_steps=steps, guidance_scale=9.0, target_fps=16, decode_chunk_size=1)
    out_dir = os.path.join(work, f"diffusers_{w}x{h}x{f}")
    os.makedirs(out_dir, exist_ok=True)
    image = pf.synthetic_image(w, h)
    image.save(os.path.join(out_dir, "input.png"))
    latents = pf.initial_latents(case, seed=11)
    save_file({"latents": latents.contiguous()}, os.path.join(out_dir, "latents.safetensors"))
    with open(os.path.join(out_dir, "case.json"), "w") as fh:
        json.dump(case, fh)
    captured = {}
    original_decode = pipe.decode_latents

    def decode_latents(lat, decode_chunk_size=None):
        captured["latents"] = lat.detach().float().cpu().clone()
        # The VAE decode on its own, against vivify's "decode" stage.
        sync()
        t0 = time.perf_counter()
        video = original_decode(lat, decode_chunk_size=decode_chunk_size)
        sync()
        captured["decode_sec"] = time.perf_counter() - t0
        return video

    pipe.decode_latents = decode_latents
    reset_peak()
    sync()
    t0 = time.perf_counter()
    try:
        out = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, image=image, width=w, height=h, num_frames=f,
                   num_inference_steps=steps, guidance_scale=9.0, target_fps=16, decode_chunk_size=1,
                   latents=latents.to(DEVICE, pipe.unet.dtype), eta=0.0, output_type="pil", clip_skip=1)
        sync()
    finally:
        del pipe.decode_latents
    sec = time.perf_counter() - t0
    peak_bytes = peak()
    frames_dir = os.path.join(out_dir, "frames")
    os.makedirs(frames_dir, exist_ok=True)
    for i, frame in enumerate(out.frames[0]):
        frame.save(os.path.join(frames_dir, f"{i:04d}.png"))
    save_file({"latents": captured["latents"].contiguous()}, os.path.join(out_dir, "final_latents.safetensors"))
    emit(event="end_to_end", w=w, h=h, frames=f, steps=steps, sec=round(sec, 3), peak_bytes=peak_bytes,
         decode_sec=round(captured["decode_sec"], 3))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--cases", default="512x512x16,1280x704x16,1024x1024x32")
    ap.add_argument("--skip-unet", action="store_true")
    ap.add_argument("--model", help="an existing model directory instead of WORK/model")
    ap.add_argument("--device", default="cuda", help="cuda (fp16), or cpu (f32) for a smoke test")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    dtype = torch.float16 if DEVICE == "cuda" else torch.float32
    work = os.path.abspath(args.work)
    model_dir = os.path.abspath(args.model) if args.model else os.path.join(work, "model")
    if not os.path.exists(os.path.join(model_dir, "model_index.json")):
        t0 = time.time()
        subprocess.run([sys.executable, os.path.join(REPO, "tools", "parity", "full_size_check.py"),
                        "--out", work, "--only-model"], check=True)
        emit(event="make_model", sec=round(time.time() - t0, 1))
    from diffusers import I2VGenXLPipeline
    import diffusers
    t0 = time.time()
    pipe = I2VGenXLPipeline.from_pretrained(model_dir, variant="fp16", torch_dtype=dtype).to(DEVICE)
    pipe.set_progress_bar_config(disable=True)
    patch_pipeline(pipe)
    emit(event="versions", torch=torch.__version__, diffusers=diffusers.__version__,
         device=torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", load_sec=round(time.time() - t0, 1))
    cases = [tuple(map(int, c.split("x"))) for c in args.cases.split(",")]
    for w, h, f in cases:
        try:
            if not args.skip_unet:
                unet_step(pipe, w, h, f, args.iters)
            end_to_end(pipe, work, w, h, f, args.steps)
        except torch.OutOfMemoryError:
            emit(event="oom", w=w, h=h, frames=f)
        reset_peak()


if __name__ == "__main__":
    main()
