"""diffusers' side of the CPU UNet benchmark: one forward of I2VGenXLUNet at the config given,
random weights, f32, the same sizes and thread count as `vivify bench-unet`. Prints one JSON line."""
import argparse, json, time
import torch
from diffusers import I2VGenXLUNet

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True)
ap.add_argument("--width", type=int, default=256)
ap.add_argument("--height", type=int, default=256)
ap.add_argument("--frames", type=int, default=8)
ap.add_argument("--batch", type=int, default=2)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--threads", type=int, required=True)
args = ap.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)

cfg = {k: v for k, v in json.load(open(args.config)).items() if not k.startswith("_")}
unet = I2VGenXLUNet(**cfg).eval()
b, f, h, w = args.batch, args.frames, args.height // 8, args.width // 8
cross = unet.config.cross_attention_dim
x = torch.randn(b, 4, f, h, w)
kw = dict(fps=torch.tensor([16] * b), image_latents=torch.randn(b, 4, f, h, w),
          image_embeddings=torch.randn(b, cross), encoder_hidden_states=torch.randn(b, 77, cross), return_dict=False)
t = torch.tensor(500)

def once():
    start = time.perf_counter()
    with torch.no_grad():
        unet(x, t, **kw)
    return time.perf_counter() - start

once()
times = sorted(once() for _ in range(args.iters))
print(json.dumps({"impl": "diffusers", "params": sum(p.numel() for p in unet.parameters()),
                  "width": args.width, "height": args.height, "frames": f, "batch": b, "dtype": "f32",
                  "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
                  "sec_min": times[0], "sec_median": times[len(times) // 2]}))
