"""Reference fixtures for vivify's AutoencoderKL port, computed by diffusers 0.42.1 on the CPU in f32.

Run from the repository root (after tools/parity/setup.sh):
    tools/parity/.venv/bin/python tools/parity/vae_fixtures.py

Deterministic: fixed seeds, so a rerun writes the same tensors (safetensors may order the header's
metadata differently, so the bytes can differ).

Writes, under tests/fixtures/:
  vae_manifest_i2vgen_xl.json   every tensor name and shape of the published-size AutoencoderKL
                                (built on the meta device, so nothing is allocated)
  vae/<case>/vae/               a tiny random AutoencoderKL in the diffusers layout
  vae/<case>/activations.safetensors
                                the encoder input, the posterior mean and logvar, the decoder
                                input and output, and the inputs and outputs of one module of each
                                kind (captured with forward hooks during those passes)

The two cases differ in channels, block count, layers per block, norm groups, image size (both
non-square) and stored weight dtype (f32 and the fp16 variant). Sizes are small on purpose: all
VAE fixtures together stay well under 1.5 MB.
"""
import json
import os
import shutil

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")

PUBLISHED = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
    sample_size=768,
    scaling_factor=0.18125,
    force_upcast=True,
)

CASES = {
    "tiny_a": dict(
        config=dict(block_out_channels=(16, 24), down_block_types=("DownEncoderBlock2D",) * 2,
                    up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8,
                    sample_size=24, scaling_factor=0.5),
        seed=1234, batch=2, height=16, width=24, weight_dtype=torch.float32),
    "tiny_b": dict(
        config=dict(block_out_channels=(8, 16, 16), down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=2, norm_num_groups=4,
                    latent_channels=3, sample_size=32, scaling_factor=0.25),
        seed=5678, batch=2, height=24, width=16, weight_dtype=torch.float16),
}

# One module of each kind, captured on their first call. The resnets with a shortcut are the first
# of a block whose channels grow (encoder) or shrink (decoder).
MODULES = [
    "encoder.down_blocks.0.resnets.0",      # no shortcut
    "encoder.down_blocks.1.resnets.0",      # 1x1 conv shortcut
    "encoder.down_blocks.0.downsamplers.0",
    "decoder.up_blocks.0.upsamplers.0",
    "encoder.mid_block.attentions.0",
    "encoder.mid_block",
    "decoder.mid_block",
]


def randomize(vae, gen):
    """Every parameter random, as in unet_fixtures.py: ±1/sqrt(fan_in) for matrices and kernels,
    norms 1 ± 0.1, biases ± 0.1."""
    with torch.no_grad():
        for name, p in vae.named_parameters():
            if p.ndim >= 2:
                bound = 1.0 / (p[0].numel() ** 0.5)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)


def dedupe(tensors, meta):
    """Stores each distinct tensor once; repeats become `alias:<key>` metadata entries."""
    kept = {}
    for key in sorted(tensors):
        t = tensors[key].float()
        sig = (tuple(t.shape), float(t.sum()), float(t.abs().sum()))
        for other in kept.get(sig, []):
            if torch.equal(tensors[other].float(), t):
                meta[key] = "alias:" + other
                del tensors[key]
                break
        else:
            kept.setdefault(sig, []).append(key)


def write_case(name, case):
    gen = torch.Generator().manual_seed(case["seed"])
    vae = AutoencoderKL(**case["config"]).eval()
    randomize(vae, gen)
    # The reference runs in f32 on weights that are exactly representable in the stored dtype.
    vae.to(case["weight_dtype"]).to(torch.float32)

    b, h, w = case["batch"], case["height"], case["width"]
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    image = torch.rand(b, 3, h, w, generator=gen) * 2 - 1
    z = torch.randn(b, vae.config.latent_channels, h // factor, w // factor, generator=gen)

    tensors, meta = {}, {}
    handles = []
    # The last up block's first resnet narrows the channels: a shortcut on the decoder side.
    last_up = f"decoder.up_blocks.{len(vae.decoder.up_blocks) - 1}.resnets.0"
    for mod_name in MODULES + [last_up]:
        seen = []

        def hook(mod, args, kwargs, output, mod_name=mod_name, seen=seen):
            if seen:
                return
            seen.append(True)
            tensors[f"{mod_name}.in"] = args[0].detach().clone()
            tensors[f"{mod_name}.out"] = output.detach().clone()

        module = vae.get_submodule(mod_name)
        handles.append(module.register_forward_hook(hook, with_kwargs=True))

    with torch.no_grad():
        posterior = vae.encode(image).latent_dist
        decoded = vae.decode(z).sample
    for hnd in handles:
        hnd.remove()
    tensors["encode.in"] = image
    tensors["encode.mean"] = posterior.mean
    tensors["encode.logvar"] = posterior.logvar
    tensors["decode.in"] = z
    tensors["decode.out"] = decoded
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    dedupe(tensors, meta)
    meta["weight_dtype"] = str(case["weight_dtype"]).replace("torch.", "")

    case_dir = os.path.join(ROOT, "vae", name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    variant = None if case["weight_dtype"] == torch.float32 else "fp16"
    vae.to(case["weight_dtype"]).save_pretrained(os.path.join(case_dir, "vae"), variant=variant)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(case_dir, "activations.safetensors"), metadata=meta)
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(case_dir) for fn in fns)
    print(f"{name}: {sum(p.numel() for p in vae.parameters())} params, {len(tensors)} tensors, "
          f"{size / 1e6:.3f} MB")


def write_manifest():
    with torch.device("meta"):
        vae = AutoencoderKL(**PUBLISHED)
    entries = [{"name": k, "shape": list(v.shape)} for k, v in vae.state_dict().items()]
    total = sum(p.numel() for p in vae.parameters())
    with open(os.path.join(ROOT, "vae_manifest_i2vgen_xl.json"), "w") as fh:
        json.dump(entries, fh, indent=0)
    print(f"published VAE: {len(entries)} tensors, {total} parameters")


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    write_manifest()
    for name, case in CASES.items():
        write_case(name, case)
