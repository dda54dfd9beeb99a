"""PyTorch's side of `vivify bench-ops`: the same convolution, temporal convolution and
attention cases, timed the same way (best of N after a warm-up), one JSON line per case.
Usage: python torch_ops.py [--iters 5] [--dtype fp16]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

# Keep in step with crates/vivify-cli/src/commands/bench_ops.rs.
CONV = [
    ("unet_3x3_320_64", 16, 320, 64, 64, 320, 3, 1, 1),
    ("unet_3x3_640_32", 16, 640, 32, 32, 640, 3, 1, 1),
    ("unet_3x3_1280_16", 16, 1280, 16, 16, 1280, 3, 1, 1),
    ("unet_1x1_320_640_32", 16, 320, 32, 32, 640, 1, 1, 0),
    ("unet_down_3x3_s2_320_64", 16, 320, 64, 64, 320, 3, 2, 1),
    ("vae_3x3_512_64", 1, 512, 64, 64, 512, 3, 1, 1),
    ("vae_3x3_512_256", 1, 512, 256, 256, 512, 3, 1, 1),
    ("vae_3x3_256_512", 1, 256, 512, 512, 256, 3, 1, 1),
    ("vae_3x3_128_512", 1, 128, 512, 512, 128, 3, 1, 1),
]
TEMPORAL = [("temporal_conv_320_64", 2, 16, 320, 64 * 64), ("temporal_conv_1280_16", 2, 16, 1280, 16 * 16)]
ATTENTION = [
    ("spatial_self_4096", 160, 4096, 4096, 64),
    ("spatial_self_1024", 320, 1024, 1024, 64),
    ("cross_4096x77", 160, 4096, 77, 64),
    ("temporal_16", 2 * 4096 * 5, 16, 16, 64),
]


def best_ms(fn, iters):
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--dtype", default="fp16")
    args = ap.parse_args()
    dt = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    dev = "cuda"
    emit = lambda op, name, ms, flops: print(json.dumps(
        {"impl": "torch", "op": op, "case": name, "ms": round(ms, 4), "dtype": args.dtype,
         "extra": {"tflops": round(flops / ms / 1e9, 1)}}), flush=True)
    with torch.no_grad():
        for name, n, c, h, w, k, ks, stride, pad in CONV:
            x = torch.randn(n, c, h, w, device=dev, dtype=dt)
            wt = torch.randn(k, c, ks, ks, device=dev, dtype=dt)
            ms = best_ms(lambda: F.conv2d(x, wt, stride=stride, padding=pad), args.iters)
            emit("conv2d", name, ms, 2.0 * n * k * c * ks * ks * (h // stride) * (w // stride))
        for name, b, f, c, hw in TEMPORAL:
            side = int(hw ** 0.5)
            x = torch.randn(b, c, f, side, side, device=dev, dtype=dt)
            wt = torch.randn(c, c, 3, 1, 1, device=dev, dtype=dt)
            bias = torch.randn(c, device=dev, dtype=dt)
            ms = best_ms(lambda: F.conv3d(x, wt, bias, padding=(1, 0, 0)), args.iters)
            emit("conv3d_311", name, ms, 2.0 * b * f * hw * c * c * 3)
        for name, bh, l, s, d in ATTENTION:
            q = torch.randn(1, bh, l, d, device=dev, dtype=dt)
            k = torch.randn(1, bh, s, d, device=dev, dtype=dt)
            v = torch.randn(1, bh, s, d, device=dev, dtype=dt)
            ms = best_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.iters)
            emit("attention", name, ms, 4.0 * bh * l * s * d)


if __name__ == "__main__":
    main()
