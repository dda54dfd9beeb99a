#!/usr/bin/env python3
"""Parity fixtures for the Rust DDIM scheduler (crates/vivify-core/src/scheduler/ddim.rs).

Reference: diffusers 0.42.1 `DDIMScheduler`, torch 2.11 on CPU, float32.

Run from the repository root with the parity venv (torch + diffusers + safetensors):

    tools/parity/.venv/bin/python tools/parity/scheduler_fixtures.py   (after tools/parity/setup.sh)

It (re)writes, deterministically:

    tests/fixtures/scheduler/ddim_parity.safetensors
    tests/fixtures/scheduler/ddim_parity.json

and is checked by `cargo test -p vivify-core --test scheduler_parity`.

Contents (all float32 unless noted):
  sample0                        initial latent, shape SHAPE (seeded randn)
  model_outputs                  [STEPS, *SHAPE] seeded randn, shared by every combo
  variance_noise                 [STEPS, *SHAPE] seeded randn, shared by every eta > 0 combo
  {cfg}/betas, {cfg}/alphas_cumprod        [1000] tables of each config
  {cfg}/final_alpha_cumprod                [] scalar
  timesteps/{spacing}/offset{o}/n{count}   int64 timesteps from set_timesteps(count)
  {cfg}/{spacing}/{eta}/prev_samples       [STEPS, *SHAPE]: DDIM run of STEPS steps from
                                           sample0, step i uses model_outputs[i] (and
                                           variance_noise[i] when eta > 0) and the previous
                                           step's prev_sample
  {cfg}/{spacing}/{eta}/pred_original_first, .../pred_original_last   [*SHAPE]

  ieee_sqrt/...                  the same tables and each combo's final (50th) prev_sample,
                                 recomputed with every float32 square root correctly rounded
                                 (see `ieee_sqrt` below); the Rust port must match these bit
                                 for bit.

Why two references: torch's CPU float32 `sqrt` (also behind `x ** 0.5`) is not correctly
rounded on the x86 MKL build of torch 2.11 (about 0.5% of inputs come out 1 ulp off,
whatever ATEN_CPU_CAPABILITY says), while the Rust port uses IEEE `f32::sqrt`. So diffusers as-is is matched within a
tolerance, and diffusers' arithmetic with IEEE square roots is matched exactly.

The JSON index lists the combos with each one's diffusers config string (as written to
scheduler_config.json, unknown keys included) so the Rust side parses real configs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import diffusers
import numpy as np
import torch
from diffusers import DDIMScheduler
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = ROOT / "tests" / "fixtures" / "scheduler"

SHAPE = (1, 4, 2, 3, 3)  # (batch, channels, frames, height, width), kept tiny for size
STEPS = 50
ETAS = {"eta0": 0.0, "eta0p5": 0.5}
SPACINGS = ["leading", "trailing", "linspace"]
TIMESTEP_COUNTS = [1, 3, 7, 13, 25, 50, 999, 1000]

I2VGEN_XL = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="squaredcos_cap_v2",
    clip_sample=False,
    clip_sample_range=1.0,
    set_alpha_to_one=True,
    steps_offset=1,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    thresholding=False,
    timestep_spacing="leading",
)

CONFIGS = {
    # The published ali-vilab/i2vgen-xl scheduler config.
    "i2vgen_xl": I2VGEN_XL,
    # Same cosine schedule, epsilon prediction, no zero-SNR rescale (t = 999 stays defined).
    "cosine_eps": {**I2VGEN_XL, "prediction_type": "epsilon", "rescale_betas_zero_snr": False},
    # Stable-Diffusion-like.
    "scaled_linear_eps": dict(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        set_alpha_to_one=False,
        steps_offset=1,
        clip_sample=False,
    ),
    # diffusers defaults: linear 1e-4..0.02, epsilon, clip_sample=True (range 1.0).
    "linear_eps_clip": dict(),
    # x_0 prediction with a non-default clip range.
    "linear_sample_clip": dict(
        beta_start=0.00085,
        beta_end=0.012,
        prediction_type="sample",
        clip_sample=True,
        clip_sample_range=1.5,
        set_alpha_to_one=False,
    ),
}


@contextlib.contextmanager
def ieee_sqrt():
    """Routes float32 `Tensor.sqrt` and `Tensor ** 0.5` through numpy (correctly rounded)."""
    orig_sqrt, orig_pow = torch.Tensor.sqrt, torch.Tensor.__pow__

    def np_sqrt(t: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(np.sqrt(t.detach().cpu().numpy()))).reshape(t.shape)

    def sqrt(self):
        return np_sqrt(self) if self.dtype == torch.float32 else orig_sqrt(self)

    def pow_(self, exponent):
        if self.dtype == torch.float32 and isinstance(exponent, float) and exponent == 0.5:
            return np_sqrt(self)
        return orig_pow(self, exponent)

    torch.Tensor.sqrt, torch.Tensor.__pow__ = sqrt, pow_
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.__pow__ = orig_sqrt, orig_pow


def run(cfg, spacing, eta, sample0, model_outputs, variance_noise):
    """STEPS DDIM steps; returns (scheduler, prev_samples, pred_original first, last)."""
    sched = DDIMScheduler.from_config(DDIMScheduler(**cfg).config, timestep_spacing=spacing)
    sched.set_timesteps(STEPS)
    x = sample0.clone()
    prevs, preds = [], []
    for i, t in enumerate(sched.timesteps.tolist()):
        out = sched.step(
            model_outputs[i],
            t,
            x,
            eta=eta,
            variance_noise=variance_noise[i] if eta > 0 else None,
        )
        x = out.prev_sample
        assert torch.isfinite(x).all(), (cfg, spacing, eta, i, t)
        prevs.append(x)
        preds.append(out.pred_original_sample)
    return sched, torch.stack(prevs), preds[0].clone(), preds[-1].clone()


def main() -> None:
    torch.use_deterministic_algorithms(True)
    gen = torch.Generator().manual_seed(20240611)
    sample0 = torch.randn(SHAPE, generator=gen, dtype=torch.float32)
    model_outputs = torch.randn((STEPS, *SHAPE), generator=gen, dtype=torch.float32)
    variance_noise = torch.randn((STEPS, *SHAPE), generator=gen, dtype=torch.float32)

    tensors: dict[str, torch.Tensor] = {
        "sample0": sample0,
        "model_outputs": model_outputs,
        "variance_noise": variance_noise,
    }
    combos = []
    configs_json = {}

    for cfg_name, cfg in CONFIGS.items():
        base = DDIMScheduler(**cfg)
        configs_json[cfg_name] = json.loads(base.to_json_string())
        tensors[f"{cfg_name}/betas"] = base.betas.clone()
        tensors[f"{cfg_name}/alphas_cumprod"] = base.alphas_cumprod.clone()
        tensors[f"{cfg_name}/final_alpha_cumprod"] = base.final_alpha_cumprod.clone().float()
        with ieee_sqrt():
            exact = DDIMScheduler(**cfg)
        tensors[f"ieee_sqrt/{cfg_name}/betas"] = exact.betas.clone()
        tensors[f"ieee_sqrt/{cfg_name}/alphas_cumprod"] = exact.alphas_cumprod.clone()

        for spacing in SPACINGS:
            sched = DDIMScheduler.from_config(base.config, timestep_spacing=spacing)
            offset = sched.config.steps_offset
            for count in TIMESTEP_COUNTS:
                sched.set_timesteps(count)
                key = f"timesteps/{spacing}/offset{offset}/n{count}"
                ts = sched.timesteps.clone().to(torch.int64)
                if key in tensors:
                    assert torch.equal(tensors[key], ts), key
                else:
                    tensors[key] = ts

            for eta_name, eta in ETAS.items():
                prefix = f"{cfg_name}/{spacing}/{eta_name}"
                sched, prevs, pred_first, pred_last = run(
                    cfg, spacing, eta, sample0, model_outputs, variance_noise
                )
                tensors[f"{prefix}/prev_samples"] = prevs
                tensors[f"{prefix}/pred_original_first"] = pred_first
                tensors[f"{prefix}/pred_original_last"] = pred_last
                with ieee_sqrt():
                    _, prevs, _, _ = run(cfg, spacing, eta, sample0, model_outputs, variance_noise)
                tensors[f"ieee_sqrt/{prefix}/final_sample"] = prevs[-1].clone()
                combos.append(
                    {
                        "config": cfg_name,
                        "spacing": spacing,
                        "eta_key": eta_name,
                        "eta": eta,
                        "config_json": sched.to_json_string(),
                        "timesteps_key": f"timesteps/{spacing}/offset{offset}/n{STEPS}",
                    }
                )

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in sorted(tensors.items())}
    save_file(
        tensors,
        OUT_DIR / "ddim_parity.safetensors",
        metadata={"generator": "tools/parity/scheduler_fixtures.py"},
    )
    index = {
        "reference": {
            "diffusers": diffusers.__version__,
            "torch": torch.__version__.split("+")[0],
            "numpy": np.__version__,
        },
        "shape": list(SHAPE),
        "steps": STEPS,
        "timestep_counts": TIMESTEP_COUNTS,
        "configs": configs_json,
        "combos": combos,
    }
    with open(OUT_DIR / "ddim_parity.json", "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(p.stat().st_size for p in OUT_DIR.iterdir())
    print(f"wrote {len(tensors)} tensors, {len(combos)} combos, {total} bytes to {OUT_DIR}")


if __name__ == "__main__":
    main()
