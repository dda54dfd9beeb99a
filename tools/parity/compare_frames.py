"""The acceptance rule of vivify's end-to-end parity with diffusers' I2VGenXLPipeline.

Usage:
    python tools/parity/compare_frames.py EXPECTED_DIR ACTUAL_DIR [--latents EXPECTED ACTUAL]

EXPECTED_DIR and ACTUAL_DIR hold the frames as 0000.png, 0001.png, ... (8-bit RGB). The rule:
  - both directories hold the same frame names, each pair of the same size;
  - over all u8 values of all frames, |expected - actual| <= 1 for at least 99.9% of the values,
    and never more than 3;
  - with --latents (two safetensors files with a tensor `latents`): the same shape, and relative
    L2 error ||actual - expected|| / ||expected|| <= 1e-3.
Prints the statistics (per frame and overall) and exits with status 1 when any check fails, 0
otherwise. Needs numpy and Pillow (and safetensors with numpy for --latents); no torch.
"""
import argparse
import os
import sys

import numpy as np
from PIL import Image

MAX_DIFF = 3
WITHIN_ONE = 0.999
LATENTS_REL_L2 = 1e-3


def frame_names(directory):
    return sorted(f for f in os.listdir(directory) if f.lower().endswith(".png"))


def load(path):
    return np.asarray(Image.open(path).convert("RGB")).astype(np.int16)


def compare_frames(expected_dir, actual_dir):
    ok = True
    exp_names, act_names = frame_names(expected_dir), frame_names(actual_dir)
    if not exp_names:
        print(f"FAIL: no frames in {expected_dir}")
        return False
    if exp_names != act_names:
        print(f"FAIL: frame names differ: expected {exp_names}, actual {act_names}")
        ok = False
    hist = np.zeros(256, dtype=np.int64)
    for name in exp_names:
        if name not in act_names:
            continue
        e, a = load(os.path.join(expected_dir, name)), load(os.path.join(actual_dir, name))
        if e.shape != a.shape:
            print(f"FAIL: {name}: size {a.shape[1]}x{a.shape[0]}, expected {e.shape[1]}x{e.shape[0]}")
            ok = False
            continue
        d = np.abs(e - a)
        h = np.bincount(d.ravel(), minlength=256)
        hist += h
        print(f"{name}: max diff {d.max()}, mean {d.mean():.4f}, exact {h[0] / d.size:.4%}, "
              f"within 1 {h[:2].sum() / d.size:.4%}")
    total = hist.sum()
    if total:
        within_one = hist[:2].sum() / total
        max_diff = int(np.nonzero(hist)[0].max())
        print(f"all frames: {total} values, exact {hist[0] / total:.4%}, within 1 {within_one:.4%} "
              f"(need >= {WITHIN_ONE:.1%}), max diff {max_diff} (need <= {MAX_DIFF}); "
              f"diff histogram {dict((i, int(c)) for i, c in enumerate(hist) if c)}")
        if within_one < WITHIN_ONE:
            print("FAIL: too many values differ by more than 1")
            ok = False
        if max_diff > MAX_DIFF:
            print(f"FAIL: a value differs by {max_diff} > {MAX_DIFF}")
            ok = False
    return ok


def compare_latents(expected_path, actual_path):
    from safetensors.numpy import load_file
    e = load_file(expected_path)["latents"].astype(np.float64)
    a = load_file(actual_path)["latents"].astype(np.float64)
    if e.shape != a.shape:
        print(f"FAIL: latents shape {a.shape}, expected {e.shape}")
        return False
    rel = np.linalg.norm(a - e) / np.linalg.norm(e)
    print(f"latents {e.shape}: relative L2 error {rel:.3e} (need <= {LATENTS_REL_L2:.0e}), "
          f"max abs diff {np.abs(a - e).max():.3e}")
    if not rel <= LATENTS_REL_L2:
        print("FAIL: latents differ")
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("expected_dir")
    ap.add_argument("actual_dir")
    ap.add_argument("--latents", nargs=2, metavar=("EXPECTED", "ACTUAL"))
    args = ap.parse_args()
    ok = compare_frames(args.expected_dir, args.actual_dir)
    if args.latents:
        ok = compare_latents(*args.latents) and ok
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
