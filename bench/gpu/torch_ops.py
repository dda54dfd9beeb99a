"""PyTorch's side of `vivify bench-ops`: the same convolution, temporal convolution, linear,
element-wise, GroupNorm and attention cases (op_cases.json, which vivify embeds), timed the same
way (best of N after a warm-up), one JSON line per case.
Usage: python torch_ops.py [--iters 5] [--dtype fp16]
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

CASES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "op_cases.json")


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
    cases = json.load(open(CASES))
    with torch.no_grad():
        for cc in cases["conv2d"]:
            name, n, c, h, w = cc["case"], cc["batch"], cc["c_in"], cc["h"], cc["w"]
            k, ks, stride, pad = cc["c_out"], cc["kernel"], cc["stride"], cc["padding"]
            x = torch.randn(n, c, h, w, device=dev, dtype=dt)
            wt = torch.randn(k, c, ks, ks, device=dev, dtype=dt)
            flops = 2.0 * n * k * c * ks * ks * (h // stride) * (w // stride)
            ms = best_ms(lambda: F.conv2d(x, wt, stride=stride, padding=pad), args.iters)
            emit("conv2d", name, ms, flops)
            # Input and weights channels last (torch.channels_last): no layout transforms around
            # cuDNN's kernel, as vivify's convolutions run after a GroupNorm's channels-last output.
            xc, wc = x.to(memory_format=torch.channels_last), wt.to(memory_format=torch.channels_last)
            ms = best_ms(lambda: F.conv2d(xc, wc, stride=stride, padding=pad), args.iters)
            emit("conv2d_variant", f"{name}/channels_last", ms, flops)
        for tc in cases["conv3d_311"]:
            name, b, f, c = tc["case"], tc["batch"], tc["frames"], tc["channels"]
            hw = tc["h"] * tc["w"]
            x = torch.randn(b, c, f, tc["h"], tc["w"], device=dev, dtype=dt)
            wt = torch.randn(c, c, 3, 1, 1, device=dev, dtype=dt)
            bias = torch.randn(c, device=dev, dtype=dt)
            ms = best_ms(lambda: F.conv3d(x, wt, bias, padding=(1, 0, 0)), args.iters)
            emit("conv3d_311", name, ms, 2.0 * b * f * hw * c * c * 3)
        for lc in cases["linear"]:
            x = torch.randn(lc["tokens"], lc["in"], device=dev, dtype=dt)
            wt = torch.randn(lc["out"], lc["in"], device=dev, dtype=dt)
            bias = torch.randn(lc["out"], device=dev, dtype=dt)
            ms = best_ms(lambda: F.linear(x, wt, bias), args.iters)
            emit("linear", lc["case"], ms, 2.0 * lc["tokens"] * lc["in"] * lc["out"])
        for ec in cases["elementwise"]:
            x = torch.randn(*ec["shape"], device=dev, dtype=dt)
            y = torch.randn_like(x)
            bias = torch.randn(1, ec["shape"][1], 1, 1, device=dev, dtype=dt)
            fn = {"add": lambda: x + y, "bias_add": lambda: x + bias,
                  "permute_copy": lambda: x.permute(0, 2, 3, 1).contiguous(),
                  "silu": lambda: F.silu(x)}[ec["op"]]
            ms = best_ms(fn, args.iters)
            passes = 3.0 if ec["op"] == "add" else 2.0
            print(json.dumps({"impl": "torch", "op": "elementwise", "case": ec["case"], "ms": round(ms, 4),
                              "dtype": args.dtype,
                              "extra": {"gb_per_s": round(passes * x.numel() * x.element_size() / ms / 1e6, 1)}}),
                  flush=True)
        for gc in cases["group_norm"]:
            # diffusers' GroupNorm then SiLU (two kernels); the temporal layers' on
            # (videos, C, frames, H, W), statistics pooled over the frames.
            c, f = gc["channels"], gc["frames"]
            pixels = (gc["h"], gc["w"])
            shape = (gc["videos"], c, f, *pixels) if f > 1 else (gc["videos"], c, *pixels)
            x = torch.randn(*shape, device=dev, dtype=dt)
            wt = torch.randn(c, device=dev, dtype=dt)
            bias = torch.randn(c, device=dev, dtype=dt)
            norm = lambda: F.group_norm(x, gc["groups"], wt, bias, 1e-6)
            fn = (lambda: F.silu(norm())) if gc["silu"] else norm
            ms = best_ms(fn, args.iters)
            print(json.dumps({"impl": "torch", "op": "group_norm", "case": gc["case"], "ms": round(ms, 4),
                              "dtype": args.dtype,
                              "extra": {"gb_per_s": round(3 * x.numel() * x.element_size() / ms / 1e6, 1)}}),
                  flush=True)
        for ac in cases["attention"]:
            name, bh, l, s, d = ac["case"], ac["batch_heads"], ac["queries"], ac["keys"], ac["head_dim"]
            q = torch.randn(1, bh, l, d, device=dev, dtype=dt)
            k = torch.randn(1, bh, s, d, device=dev, dtype=dt)
            v = torch.randn(1, bh, s, d, device=dev, dtype=dt)
            ms = best_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.iters)
            emit("attention", name, ms, 4.0 * bh * l * s * d)


if __name__ == "__main__":
    main()
