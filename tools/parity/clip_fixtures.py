"""Reference fixtures for vivify's CLIP text and vision encoders, computed by transformers 5.24 on
the CPU in f32 (deterministic: fixed seeds, no randomness elsewhere).

Run from the repository root (after tools/parity/setup.sh):
    tools/parity/.venv/bin/python tools/parity/clip_fixtures.py

Writes, under tests/fixtures/:
  clip_manifest_i2vgen_xl.json   tensor names, shapes and parameter counts of the published-size
                                 text encoder (CLIPTextModel) and image encoder
                                 (CLIPVisionModelWithProjection), built on the meta device
  clip/text_bare/                a tiny random CLIPTextModel as transformers 5 saves it: config.json
                                 and model.safetensors (f32) with bare names (`embeddings.*`)
  clip/text_prefixed/            the same weights in the published layout: `text_model.*` names,
                                 stored as model.fp16.safetensors, plus the int64
                                 `text_model.embeddings.position_ids` buffer older files carry
  clip/vision/                   a tiny random CLIPVisionModelWithProjection as saved
                                 (`vision_model.*` + `visual_projection.weight`, f32)
  clip/activations.safetensors   inputs and reference outputs (see write_text / write_vision)

The text weights are rounded to f16 before the reference runs, so the f32 and f16 files hold the
same values. Text uses exact (erf) GELU like the published model; vision uses quick_gelu and
eps 1e-6 so both activations and a non-default eps are covered.
"""
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures")
CLIP = os.path.join(ROOT, "clip")

# Token ids of the tiny vocabulary: BOS and EOS at its top, as CLIP's 49406 / 49407.
BOS, EOS = 998, 999

TEXT = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            vocab_size=1000, max_position_embeddings=77, hidden_act="gelu",
            bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS, projection_dim=32)
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
              patch_size=14, image_size=56, projection_dim=24, hidden_act="quick_gelu",
              layer_norm_eps=1e-6)

PUBLISHED_TEXT = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                      intermediate_size=4096, vocab_size=49408, max_position_embeddings=77,
                      hidden_act="gelu", projection_dim=1024)
PUBLISHED_VISION = dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                        intermediate_size=5120, patch_size=14, image_size=224, hidden_act="gelu",
                        layer_norm_eps=1e-5, projection_dim=1024)


def randomize(model, gen):
    """Every parameter random, on the scale of the UNet fixtures: matrices ±1/sqrt(fan_in), norm
    weights 1±0.1, everything else ±0.1."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                bound = 1.0 / (p[0].numel() ** 0.5)
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * bound)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
            else:
                p.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)


def prompt_ids(gen):
    """Two prompts of 5 and 20 tokens, padded to 77: the first with token 0 (OpenCLIP's "!" pad,
    as the SD2-style tokenizer of I2VGen-XL pads), the second with EOS (openai CLIP's pad)."""
    rows = []
    for length, pad in ((5, 0), (20, EOS)):
        body = torch.randint(1, BOS, (length,), generator=gen).tolist()
        row = [BOS] + body + [EOS]
        rows.append(row + [pad] * (77 - len(row)))
    return torch.tensor(rows, dtype=torch.int64)


def write_text(tensors, meta):
    gen = torch.Generator().manual_seed(4321)
    model = CLIPTextModel(CLIPTextConfig(**TEXT)).eval()
    randomize(model, gen)
    model.half().float()
    ids = prompt_ids(gen)
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        hs = out.hidden_states  # (embeddings, layer 1, ..., layer N), last one not normed
        assert len(hs) == TEXT["num_hidden_layers"] + 1
        # What I2VGenXLPipeline.encode_prompt computes with clip_skip=1 (the pipeline default):
        # hidden_states[-(clip_skip + 1)] through final_layer_norm. (diffusers 0.42.1 reaches the
        # norm as text_encoder.text_model.final_layer_norm, which transformers 5 no longer has:
        # that pipeline path raises AttributeError there, so the reference is computed here.)
        penultimate = model.final_layer_norm(hs[-2])
    tensors["text.in.input_ids"] = ids
    tensors["text.embeddings"] = hs[0]
    tensors["text.layer0.out"] = hs[1]
    tensors["text.penultimate_normed"] = penultimate
    tensors["text.last_hidden_state"] = out.last_hidden_state

    bare = os.path.join(CLIP, "text_bare")
    model.save_pretrained(bare)
    sd = load_file(os.path.join(bare, "model.safetensors"))
    assert not any(k.startswith("text_model.") for k in sd), "transformers now keeps the prefix"
    prefixed = os.path.join(CLIP, "text_prefixed")
    os.makedirs(prefixed)
    shutil.copy(os.path.join(bare, "config.json"), prefixed)
    renamed = {"text_model." + k: v.half().contiguous() for k, v in sd.items()}
    renamed["text_model.embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    save_file(renamed, os.path.join(prefixed, "model.fp16.safetensors"), metadata={"format": "pt"})


def write_vision(tensors, meta):
    gen = torch.Generator().manual_seed(8765)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VISION)).eval()
    randomize(model, gen)
    # f16-exact pixels, stored as f16 to halve their size.
    px = torch.randn(2, 3, VISION["image_size"], VISION["image_size"], generator=gen).half()
    with torch.no_grad():
        out = model(px.float(), output_hidden_states=True)
        vm = model.vision_model
        embeddings = vm.embeddings(px.float())
    tensors["vision.in.pixel_values"] = px
    tensors["vision.embeddings"] = embeddings
    tensors["vision.pre_layrnorm"] = out.hidden_states[0]
    tensors["vision.layer0.out"] = out.hidden_states[1]
    tensors["vision.last_hidden_state"] = out.last_hidden_state
    tensors["vision.image_embeds"] = out.image_embeds
    model.save_pretrained(os.path.join(CLIP, "vision"))


def spec(model):
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "tensors": [{"name": k, "shape": list(v.shape)} for k, v in model.state_dict().items()],
    }


def write_manifest():
    with torch.device("meta"):
        text = CLIPTextModel(CLIPTextConfig(**PUBLISHED_TEXT))
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**PUBLISHED_VISION))
    manifest = {"text": spec(text), "vision": spec(vision)}
    # One tensor per line: readable diffs at a fraction of indent=2's size.
    with open(os.path.join(ROOT, "clip_manifest_i2vgen_xl.json"), "w") as fh:
        fh.write("{\n")
        for i, (part, s) in enumerate(manifest.items()):
            fh.write(f'"{part}": {{"params": {s["params"]}, "tensors": [\n')
            fh.write(",\n".join(json.dumps(t) for t in s["tensors"]))
            fh.write("\n]}" + (",\n" if i + 1 < len(manifest) else "\n"))
        fh.write("}\n")
    for part, s in manifest.items():
        print(f"published {part}: {len(s['tensors'])} tensors, {s['params']} parameters")


if __name__ == "__main__":
    torch.manual_seed(0)
    shutil.rmtree(CLIP, ignore_errors=True)
    os.makedirs(CLIP)
    write_manifest()
    tensors, meta = {}, {}
    write_text(tensors, meta)
    write_vision(tensors, meta)
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(CLIP, "activations.safetensors"), metadata=meta)
    size = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(CLIP) for fn in fns)
    size += os.path.getsize(os.path.join(ROOT, "clip_manifest_i2vgen_xl.json"))
    print(f"CLIP fixtures: {size / 1e6:.3f} MB")
