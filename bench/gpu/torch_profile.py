"""Where diffusers' UNet step spends its GPU time, by kind of kernel, beside vivify's
`VIVIFY_PROFILE=1 vivify bench-unet` (bench/gpu/run.sh, phase `profile`).

Usage: python torch_profile.py --unet DIR/model/unet [--case 512x512x16]
Loads the fp16 UNet, runs one warm-up step on the guidance batch of 2, profiles one more with
torch.profiler, and prints one JSON line: milliseconds of CUDA kernel time per category and the
top kernels. Categories come from kernel names (cuDNN/CUTLASS convolution, GEMM, attention,
normalisation, element-wise, copies).
"""
import argparse
import json
import re

import torch
from diffusers import I2VGenXLUNet

from diffusers_side import unet_step_fn  # the same step diffusers_side.py times

CATEGORIES = [
    ("attention", r"flash|fmha|attention|sdpa"),
    ("conv", r"conv|fprop|implicit|winograd|nchwToNhwc|nhwcToNchw|cudnn"),
    ("gemm", r"gemm|cutlass|sm\d+_xmma|cublas|matmul"),
    ("norm", r"norm|welford|reduce"),
    ("copy/cat", r"copy|cat|transpose|permute|contiguous|memcpy|memset"),
    ("elementwise", r"elementwise|vectorized|unrolled|gelu|silu|add|mul"),
]


def category(name):
    for cat, pattern in CATEGORIES:
        if re.search(pattern, name, re.IGNORECASE):
            return cat
    return "other"


@torch.no_grad()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--unet", required=True)
    ap.add_argument("--case", default="512x512x16")
    a = ap.parse_args()
    w, h, f = map(int, a.case.split("x"))
    unet = I2VGenXLUNet.from_pretrained(a.unet, torch_dtype=torch.float16, variant="fp16").to("cuda")
    step = unet_step_fn(unet, w, h, f, device="cuda")
    step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    kernels = {}
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels.setdefault(ev.name, [0.0, 0])
            k[0] += ev.time_range.elapsed_us() / 1e3
            k[1] += 1
    by_cat = {}
    for name, (ms, _) in kernels.items():
        by_cat[category(name)] = by_cat.get(category(name), 0.0) + ms
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:25]
    print(json.dumps({
        "impl": "diffusers", "case": a.case,
        "total_kernel_ms": round(sum(v[0] for v in kernels.values()), 2),
        "by_category_ms": {k: round(v, 2) for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "top_kernels": [{"name": n[:120], "ms": round(v[0], 3), "calls": v[1]} for n, v in top],
    }))


if __name__ == "__main__":
    main()
