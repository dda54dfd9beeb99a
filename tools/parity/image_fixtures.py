"""Reference fixtures for vivify's image preparation, made with Pillow and diffusers 0.42.1.

Run from the repository root (after tools/parity/setup.sh):
    tools/parity/.venv/bin/python tools/parity/image_fixtures.py

Writes tests/fixtures/image/:
  src_*.png           source images (smooth gradients and shapes, so PNG keeps them small)
  cases.json          for each case: source, target width/height, and the output files
  crop_*.png          diffusers' _center_crop_wide(src, (W, H))            (the VAE's input)
  clip_*.png          _resize_bilinear(_center_crop_wide(src, (W, W)), 224) (CLIP's input)
  rotated.jpg         a JPEG stored sideways with EXIF orientation 6, and upright.png, how
                      Pillow shows it after ImageOps.exif_transpose
  rgba.png, rgba.webp an image with alpha (lossless WebP); Pillow's convert("RGB") drops alpha
"""
import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from diffusers.pipelines.deprecated.i2vgen_xl.pipeline_i2vgen_xl import _center_crop_wide, _resize_bilinear

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "image")


def source(w, h, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1)
    im = Image.fromarray(img.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(3, max(4, min(w, h) // 3)))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return im


def main():
    os.makedirs(OUT, exist_ok=True)
    sources = {"src_wide.png": source(300, 200, 1), "src_odd.png": source(97, 131, 2)}
    for name, im in sources.items():
        im.save(os.path.join(OUT, name))
    # (source, width, height): downscales, upscales, odd scales, wide and tall targets.
    targets = [("src_wide.png", 64, 40), ("src_wide.png", 48, 48), ("src_wide.png", 40, 72),
               ("src_wide.png", 320, 200), ("src_odd.png", 64, 40), ("src_odd.png", 128, 176),
               ("src_odd.png", 56, 56)]
    cases = []
    for i, (src, w, h) in enumerate(targets):
        im = sources[src]
        crop = _center_crop_wide(im, (w, h))
        clip = _resize_bilinear(_center_crop_wide(im, (w, w)), (224, 224))
        crop.save(os.path.join(OUT, f"crop_{i}.png"))
        clip.save(os.path.join(OUT, f"clip_{i}.png"))
        cases.append({"source": src, "width": w, "height": h, "crop": f"crop_{i}.png", "clip": f"clip_{i}.png"})
    with open(os.path.join(OUT, "cases.json"), "w") as fh:
        json.dump(cases, fh, indent=1)

    # Stored sideways: the pixels are rotated and the tag says "rotate 90 CW to view".
    upright = source(40, 24, 3)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(os.path.join(OUT, "rotated.jpg"), quality=95, exif=exif)
    shown = ImageOps.exif_transpose(Image.open(os.path.join(OUT, "rotated.jpg"))).convert("RGB")
    shown.save(os.path.join(OUT, "upright.png"))

    rgba = source(32, 16, 4).convert("RGBA")
    alpha = Image.linear_gradient("L").resize((32, 16))
    rgba.putalpha(alpha)
    rgba.save(os.path.join(OUT, "rgba.png"))
    rgba.save(os.path.join(OUT, "rgba.webp"), lossless=True)
    rgba.convert("RGB").save(os.path.join(OUT, "rgba_as_rgb.png"))
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(cases)} cases, {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
