"""Summarises a bench/gpu/run.sh run: writes OUT/results.json and prints the tables.
Usage: python report.py --out OUT --work WORK --cases 512x512x16,...
Parity rule (issue 7): final latents relative L2 error <= 2e-2 and frames PSNR >= 35 dB,
vivify fp16 against diffusers fp16 on the same weights, image, prompt and latents.
"""
import argparse
import glob
import json
import math
import os

import numpy as np

LATENTS_LIMIT = 2e-2
PSNR_LIMIT = 35.0


def lines(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def parity(work, case, run=None):
    """vivify's run `run` (default vivify_{case}) against diffusers' at the case."""
    from PIL import Image
    from safetensors.numpy import load_file
    d, v = os.path.join(work, f"diffusers_{case}"), os.path.join(work, run or f"vivify_{case}")
    try:
        ref = load_file(os.path.join(d, "final_latents.safetensors"))["latents"].astype(np.float64)
        got = load_file(os.path.join(v, "final_latents.safetensors"))["latents"].astype(np.float64)
    except (FileNotFoundError, KeyError):
        return None
    rel = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
    names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "frames", "*.png")))
    mse = []
    for n in names:
        a = np.asarray(Image.open(os.path.join(d, "frames", n)).convert("RGB"), dtype=np.float64)
        b = np.asarray(Image.open(os.path.join(v, "frames", n)).convert("RGB"), dtype=np.float64)
        mse.append(((a - b) ** 2).mean())
    m = float(np.mean(mse)) if mse else float("nan")
    psnr = float("inf") if m == 0 else 10 * math.log10(255 ** 2 / m)
    return {"latents_rel_l2": rel, "psnr_db": psnr, "frames": len(names),
            "pass": rel <= LATENTS_LIMIT and psnr >= PSNR_LIMIT}


def sidecar(out, run):
    """End-to-end seconds, peak device bytes and stage timings from a generate run's sidecar."""
    path = os.path.join(out, f"{run}.sidecar.json")
    if not os.path.exists(path):
        return {}
    side = json.load(open(path))
    return {"sec": round(sum(t["seconds"] for t in side.get("timings", [])), 3),
            "peak_bytes": side.get("plan", {}).get("peak_device_bytes"),
            "timings": side.get("timings")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--cases", required=True)
    args = ap.parse_args()
    dif = lines(os.path.join(args.out, "diffusers.jsonl"))
    viv_unet = lines(os.path.join(args.out, "unet_vivify.jsonl"))
    results = {"device": open(os.path.join(args.out, "device.txt")).read().strip()
               if os.path.exists(os.path.join(args.out, "device.txt")) else None,
               "versions": next((r for r in dif if r.get("event") == "versions"), None), "cases": [], "ops": []}
    for case in args.cases.split(","):
        w, h, f = map(int, case.split("x"))
        match = lambda r: (r.get("w"), r.get("h"), r.get("frames")) == (w, h, f)
        d_step = next((r for r in dif if r.get("event") == "unet_step" and match(r)), {})
        d_e2e = next((r for r in dif if r.get("event") == "end_to_end" and match(r)), {})
        v_step = next((r for r in viv_unet if (r.get("width"), r.get("height"), r.get("frames")) == (w, h, f)), {})
        v_e2e = sidecar(args.out, f"vivify_{case}")
        # How many shapes generate ran through cuDNN's graph API (engines chosen by heuristics,
        # nothing timed), of the legacy API's algorithm choices how many it searched for and
        # how many it found in the run's cache, and of the NCHW convolutions' ways
        # (nn::cuda::conv_path) how many it timed and how many it found recorded
        # (VIVIFY_CONV_LOG lines): its e2e time includes those searches and timings only.
        log_path = os.path.join(args.out, f"vivify_{case}.log")
        convs = None
        if os.path.exists(log_path):
            log = open(log_path, errors="replace").read()
            paths = [line for line in log.splitlines() if line.startswith("conv path ")]
            convs = {"graph": log.count("cudnn graph "), "searched": log.count("(from a search"),
                     "cached": log.count("(from the cache)"),
                     "paths_timed": sum("(timed:" in line for line in paths),
                     "paths_recorded": sum(line.endswith("(recorded)") for line in paths)}
        results["cases"].append({
            "case": case,
            "diffusers": {"sec_per_step": d_step.get("sec_min"), "unet_peak_bytes": d_step.get("peak_bytes"),
                          "e2e_sec": d_e2e.get("sec"), "e2e_peak_bytes": d_e2e.get("peak_bytes"),
                          "steps": d_e2e.get("steps"), "decode_sec": d_e2e.get("decode_sec")},
            "vivify": {"sec_per_step": v_step.get("sec_min"), "unet_peak_bytes": v_step.get("peak_bytes"),
                       "e2e_sec": v_e2e.get("sec"), "e2e_peak_bytes": v_e2e.get("peak_bytes"),
                       "timings": v_e2e.get("timings"), "conv_algorithms": convs},
            "parity": parity(args.work, case),
        })
    torch_ops = {(r["op"], r["case"]): r for r in lines(os.path.join(args.out, "ops_torch.jsonl"))}
    for r in lines(os.path.join(args.out, "ops_vivify.jsonl")):
        # A variant of an op ("attention_variant" "spatial_self_4096/ldmatrix", "conv2d_variant"
        # "unet_3x3_320_64/graph") against torch's same variant where it has one
        # ("unet_3x3_320_64/channels_last"), else against its same case of the base op.
        t = torch_ops.get((r["op"], r["case"]))
        if t is None and r["op"].endswith("_variant"):
            t = torch_ops.get((r["op"][:-len("_variant")], r["case"].split("/")[0]))
        t = t or {}
        results["ops"].append({"op": r["op"], "case": r["case"], "vivify_ms": r["ms"], "torch_ms": t.get("ms"),
                               "vivify_tflops": r["extra"].get("tflops"),
                               "ratio": r["ms"] / t["ms"] if t.get("ms") else None})
    results["ablation"] = lines(os.path.join(args.out, "ablation.jsonl"))
    first = args.cases.split(",")[0]
    # The one-step process run before the cases, the machine's first to run every model: its
    # stage times show what a first run on a fresh machine pays once.
    results["warmup"] = sidecar(args.out, "vivify_warmup") or None
    jit = os.path.join(args.out, "warmup_jit_cache.txt")
    if results["warmup"] and os.path.exists(jit):
        results["warmup"]["jit_cache"] = open(jit).read().strip()
    results["residency"] = []
    for r in ("all", "staged", "streamed-2"):
        run = f"vivify_{first}" if r == "all" else f"vivify_{first}_{r}"
        e2e = sidecar(args.out, run)
        if e2e:
            results["residency"].append({"case": first, "residency": r, **e2e,
                                         "parity": parity(args.work, first, run)})
    prof_v = lines(os.path.join(args.out, "profile_vivify.jsonl"))
    prof_d = lines(os.path.join(args.out, "profile_diffusers.jsonl"))
    results["profile"] = {"vivify": prof_v[0].get("profile") if prof_v else None,
                          "diffusers": prof_d[0] if prof_d else None}
    disabled = os.path.join(args.out, "disabled.txt")
    results["kernels_disabled_after_failed_tests"] = open(disabled).read().strip() if os.path.exists(disabled) else None
    with open(os.path.join(args.out, "results.json"), "w") as fh:
        json.dump(results, fh, indent=1)

    fmt = lambda x, p=3: "-" if x is None else f"{x:.{p}f}"
    gib = lambda b: None if b is None else b / 2 ** 30
    ratio = lambda a, b: None if a is None or b is None or b == 0 else a / b
    print(f"device: {results['device']}; versions: {results['versions']}")
    print("\nop | case | torch ms | vivify ms | vivify/torch")
    for o in results["ops"]:
        print(f"{o['op']} | {o['case']} | {fmt(o['torch_ms'])} | {fmt(o['vivify_ms'])} | {fmt(o['ratio'], 2)}")
    if results["kernels_disabled_after_failed_tests"]:
        print(f"!! kernel tests failed, run with VIVIFY_CUDA_DISABLE={results['kernels_disabled_after_failed_tests']}")
    if results["profile"]["vivify"]:
        print("\nvivify profile (ms/step, synchronized): " + ", ".join(
            f"{p['name']} {p['ms_per_step']:.1f}" for p in results["profile"]["vivify"]))
    if results["profile"]["diffusers"]:
        print(f"diffusers kernels (ms/step): {results['profile']['diffusers'].get('by_category_ms')}")
    for a in results["ablation"]:
        print(f"ablation at {a.get('case', first)}: without {a.get('disabled')}: {fmt(a.get('sec_min'))} s/step")
    for r in results["residency"]:
        p = r["parity"] or {}
        print(f"residency {r['residency']} at {r['case']}: e2e {fmt(r['sec'], 2)} s, "
              f"peak {fmt(gib(r['peak_bytes']), 2)} GiB, parity {'-' if not p else ('PASS' if p['pass'] else 'FAIL')}")
    if results["warmup"]:
        print("vivify warm-up process (one step at " + first + ", the machine's first generate): " + ", ".join(
            f"{t['stage']} {t['seconds']:.2f} s" for t in results["warmup"]["timings"] or [])
              + (f"; {results['warmup']['jit_cache']}" if results["warmup"].get("jit_cache") else ""))
    print("\ncase | s/step diffusers | s/step vivify | ratio | e2e s diffusers | e2e s vivify | ratio | "
          "peak GiB diffusers | peak GiB vivify | latents rel err | PSNR dB | parity")
    for c in results["cases"]:
        d, v, p = c["diffusers"], c["vivify"], c["parity"] or {}
        print(f"{c['case']} | {fmt(d['sec_per_step'])} | {fmt(v['sec_per_step'])} | "
              f"{fmt(ratio(v['sec_per_step'], d['sec_per_step']), 2)} | {fmt(d['e2e_sec'], 2)} | "
              f"{fmt(v['e2e_sec'], 2)} | {fmt(ratio(v['e2e_sec'], d['e2e_sec']), 2)} | "
              f"{fmt(gib(d['e2e_peak_bytes']), 2)} | {fmt(gib(v['e2e_peak_bytes']), 2)} | "
              f"{fmt(p.get('latents_rel_l2'), 5)} | {fmt(p.get('psnr_db'), 1)} | "
              f"{'-' if not p else ('PASS' if p['pass'] else 'FAIL')}")
    for c in results["cases"]:
        d_dec = c["diffusers"].get("decode_sec")
        v_dec = next((t["seconds"] for t in c["vivify"].get("timings") or [] if t["stage"] == "decode"), None)
        if d_dec is not None or v_dec is not None:
            print(f"{c['case']}: VAE decode s diffusers {fmt(d_dec, 2)}, vivify {fmt(v_dec, 2)}, "
                  f"ratio {fmt(ratio(v_dec, d_dec), 2)}")
    for c in results["cases"]:
        convs = c["vivify"]["conv_algorithms"]
        if convs:
            print(f"{c['case']}: vivify generate ran {convs.get('graph', 0)} convolution shapes through cuDNN's "
                  f"graph API (heuristic engines, nothing timed); of the legacy API's, it timed "
                  f"{convs['searched']} algorithm searches and took {convs['cached']} choices from the "
                  f"run's cache, filled by the phases before it; of the NCHW convolutions' ways it "
                  f"timed {convs.get('paths_timed', 0)} shapes and found {convs.get('paths_recorded', 0)} "
                  f"recorded")


if __name__ == "__main__":
    main()
