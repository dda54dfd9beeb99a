"""Reference fixtures for vivify's I2VGenXLUNet port, computed by diffusers 0.42.1 on the CPU in f32.

Run from the repository root (after tools/parity/setup.sh):
    tools/parity/.venv/bin/python tools/parity/unet_fixtures.py

Writes, under tests/fixtures/:
  unet_manifest_i2vgen_xl.json   every tensor name and shape of the published-size UNet (built on
                                 the meta device, so nothing is allocated) and its parameter count
  unet/<case>/unet/              a tiny random UNet in the diffusers layout (config.json + weights)
  unet/<case>/activations.safetensors
                                 inputs and outputs of the whole forward pass and of one module of
                                 each kind (captured with forward hooks during that pass); integer
                                 arguments are in the safetensors metadata

The two cases differ in channels, heads, layers per block, block types, frame count, latent size
(8x8 and the non-square 11x20, which forces diffusers' explicit upsample sizes and an adaptive
pool that both shrinks and grows) and stored weight dtype (f32 and f16).
"""
import json
import os
import shutil

import torch
from diffusers import I2VGenXLUNet
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")

CASES = {
    "tiny_a": dict(
        config=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1, norm_num_groups=4,
                    cross_attention_dim=16, attention_head_dim=4),
        batch=2, frames=5, height=8, width=8, timestep=501, fps=16, weight_dtype=torch.float32),
    "tiny_b": dict(
        config=dict(block_out_channels=(8, 16, 24), layers_per_block=2, norm_num_groups=4,
                    cross_attention_dim=24, attention_head_dim=8,
                    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D", "CrossAttnDownBlock3D"),
                    up_block_types=("CrossAttnUpBlock3D", "UpBlock3D", "CrossAttnUpBlock3D")),
        batch=2, frames=3, height=11, width=20, timestep=981, fps=8, weight_dtype=torch.float16),
}

# One module of each kind, plus every whole block; captured on their first call.
def modules_to_capture(unet):
    names = ["time_proj", "time_embedding", "fps_embedding", "context_embedding",
             "image_latents_context_embedding", "image_latents_proj_in", "image_latents_temporal_encoder",
             "conv_in", "transformer_in", "mid_block"]
    names += [f"down_blocks.{i}" for i in range(len(unet.down_blocks))]
    names += [f"up_blocks.{i}" for i in range(len(unet.up_blocks))]
    names += ["down_blocks.0.resnets.0", "down_blocks.0.temp_convs.0", "down_blocks.0.attentions.0",
              "down_blocks.0.temp_attentions.0", "down_blocks.0.downsamplers.0"]
    # An upsampler, and a resnet with a 1x1 shortcut (channels change after the skip concat).
    names += ["up_blocks.0.upsamplers.0", "up_blocks.1.upsamplers.0", "up_blocks.1.resnets.0"]
    return names


def randomize(unet, gen):
    """Every parameter random (diffusers zero-inits some layers, which would hide bugs there)."""
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if p.ndim >= 2:
                bound = 1.0 / (p[0].numel() ** 0.5)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)


def flatten(prefix, value, tensors, meta):
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value.detach().contiguous().clone()
    elif isinstance(value, (tuple, list)):
        if all(isinstance(v, int) for v in value):
            meta[prefix] = json.dumps(list(value))
        else:
            for i, v in enumerate(value):
                flatten(f"{prefix}.{i}", v, tensors, meta)
    elif isinstance(value, (int, float)):
        meta[prefix] = json.dumps(value)
    elif value is None or isinstance(value, dict):
        pass
    elif hasattr(value, "sample"):
        flatten(prefix, value.sample, tensors, meta)
    else:
        raise TypeError(f"{prefix}: cannot store {type(value)}")


def dedupe(tensors, meta):
    """Stores each distinct tensor once; repeats become `alias:<key>` metadata entries (the
    context, for one, reaches every block unchanged)."""
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
    gen = torch.Generator().manual_seed(1234 if name == "tiny_a" else 5678)
    unet = I2VGenXLUNet(**case["config"]).eval()
    randomize(unet, gen)
    # The reference runs in f32 on weights that are exactly representable in the stored dtype.
    unet.to(case["weight_dtype"]).to(torch.float32)

    b, f, h, w = case["batch"], case["frames"], case["height"], case["width"]
    cross = unet.config.cross_attention_dim
    inputs = dict(
        sample=torch.randn(b, 4, f, h, w, generator=gen),
        image_latents=torch.randn(b, 4, f, h, w, generator=gen),
        image_embeddings=torch.randn(b, cross, generator=gen),
        encoder_hidden_states=torch.randn(b, 77, cross, generator=gen),
    )
    timestep = torch.tensor(case["timestep"])
    fps = torch.tensor([case["fps"]] * b)

    tensors, meta = {}, {}
    handles = []
    for mod_name in modules_to_capture(unet):
        module = unet.get_submodule(mod_name)
        seen = []

        def hook(mod, args, kwargs, output, mod_name=mod_name, seen=seen):
            if seen:
                return
            seen.append(True)
            for i, a in enumerate(args):
                flatten(f"{mod_name}.in.{i}", a, tensors, meta)
            for k, v in kwargs.items():
                flatten(f"{mod_name}.in.{k}", v, tensors, meta)
            flatten(f"{mod_name}.out", output, tensors, meta)

        handles.append(module.register_forward_hook(hook, with_kwargs=True))

    with torch.no_grad():
        out = unet(inputs["sample"], timestep, fps=fps, image_latents=inputs["image_latents"],
                   image_embeddings=inputs["image_embeddings"],
                   encoder_hidden_states=inputs["encoder_hidden_states"], return_dict=False)[0]
    for hnd in handles:
        hnd.remove()
    for k, v in inputs.items():
        tensors[f"unet.in.{k}"] = v
    tensors["unet.out"] = out
    dedupe(tensors, meta)
    meta["unet.in.timestep"] = json.dumps(case["timestep"])
    meta["unet.in.fps"] = json.dumps(case["fps"])
    meta["weight_dtype"] = str(case["weight_dtype"]).replace("torch.", "")

    case_dir = os.path.join(ROOT, "unet", name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    variant = None if case["weight_dtype"] == torch.float32 else "fp16"
    unet.to(case["weight_dtype"]).save_pretrained(os.path.join(case_dir, "unet"), variant=variant)
    save_file({k: v.float().contiguous() for k, v in tensors.items()},
              os.path.join(case_dir, "activations.safetensors"), metadata=meta)
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(case_dir) for fn in fns)
    print(f"{name}: {sum(p.numel() for p in unet.parameters())} params, {len(tensors)} tensors, {size / 1e6:.2f} MB")


def write_denoise(name):
    """Three DDIM steps with guidance 9 over the saved tiny UNet, as I2VGenXLPipeline's loop runs
    them (conditioning rows [negative, positive] from the case's batch-2 inputs)."""
    from diffusers import DDIMScheduler
    from safetensors.torch import load_file
    case_dir = os.path.join(ROOT, "unet", name)
    unet = I2VGenXLUNet.from_pretrained(os.path.join(case_dir, "unet")).float().eval()
    acts = load_file(os.path.join(case_dir, "activations.safetensors"))
    sched = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                          rescale_betas_zero_snr=True, set_alpha_to_one=True, steps_offset=1,
                          timestep_spacing="leading", clip_sample=False)
    steps, guidance, fps = 3, 9.0, 16
    sched.set_timesteps(steps)
    image_latents = acts["unet.in.image_latents"]
    b, c, f, h, w = image_latents.shape
    gen = torch.Generator().manual_seed(99)
    latents = torch.randn(1, c, f, h, w, generator=gen)
    cond = dict(encoder_hidden_states=acts["unet.in.encoder_hidden_states"],
                image_embeddings=torch.randn(2, unet.config.cross_attention_dim, generator=gen),
                image_latents=image_latents)
    x = latents
    with torch.no_grad():
        for t in sched.timesteps:
            pred = unet(torch.cat([x] * 2), t, fps=torch.tensor([fps, fps]), return_dict=False, **cond)[0]
            uncond, text = pred.chunk(2)
            pred = uncond + guidance * (text - uncond)
            flat = lambda v: v.permute(0, 2, 1, 3, 4).reshape(f, c, h, w)
            x = sched.step(flat(pred), t, flat(x)).prev_sample
            x = x[None].reshape(1, f, c, h, w).permute(0, 2, 1, 3, 4)
    tensors = {"latents": latents, "out": x.contiguous(), **{f"cond.{k}": v for k, v in cond.items()}}
    meta = {"steps": json.dumps(steps), "guidance": json.dumps(guidance), "fps": json.dumps(fps)}
    save_file(tensors, os.path.join(case_dir, "denoise.safetensors"), metadata=meta)
    print(f"{name}: denoise fixture, timesteps {sched.timesteps.tolist()}")


def write_manifest():
    with torch.device("meta"):
        unet = I2VGenXLUNet()
    entries = [{"name": k, "shape": list(v.shape)} for k, v in unet.state_dict().items()]
    total = sum(p.numel() for p in unet.parameters())
    with open(os.path.join(ROOT, "unet_manifest_i2vgen_xl.json"), "w") as fh:
        json.dump(entries, fh, indent=0)
    print(f"published UNet: {len(entries)} tensors, {total} parameters")


if __name__ == "__main__":
    torch.manual_seed(0)
    os.makedirs(ROOT, exist_ok=True)
    write_manifest()
    for name, case in CASES.items():
        write_case(name, case)
    write_denoise("tiny_a")
