"""Regenerate edgekit/data/calibration/*.jpg (calibration/ links there) from the public-domain /
CC0 photos shipped in scikit-image.

Maintainers only (needs `pip install scikit-image` in a scratch venv):
    python tools/make_calibration_photos.py
Each photo is stored as JPEG with its short side at most 320 px; see edgekit/data/calibration/README.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

PHOTOS = {  # scikit-image file -> (our name, licence as stated by scikit-image)
    "astronaut.png": ("astronaut.jpg", "public domain (NASA)"),
    "chelsea.png": ("chelsea_cat.jpg", "CC0 (Stefan van der Walt)"),
    "coffee.png": ("coffee.jpg", "CC0 (Rachel Michetti)"),
    "rocket.jpg": ("rocket.jpg", "public domain (SpaceX)"),
    "hubble_deep_field.jpg": ("hubble_deep_field.jpg", "public domain (NASA)"),
    "camera.png": ("cameraman_gray.jpg", "CC0 (Lav Varshney)"),
    "grass.png": ("grass.jpg", "CC0 (CC0Textures)"),
    "brick.png": ("brick.jpg", "CC0 (CC0Textures)"),
    "gravel.png": ("gravel.jpg", "CC0 (CC0Textures)"),
    "retina.jpg": ("retina.jpg", "CC0 1.0 (Wikimedia Commons)"),
    "coins.png": ("coins.jpg", "no known copyright restrictions (Brooklyn Museum)"),
    "clock_motion.png": ("clock.jpg", "public domain (Stefan van der Walt)"),
    "ihc.png": ("immunohistochemistry.jpg", "no known copyright restrictions"),
}


def main() -> int:
    import skimage.data

    src = Path(skimage.data.__file__).parent
    out = Path(__file__).resolve().parents[1] / "edgekit" / "data" / "calibration"
    out.mkdir(exist_ok=True)
    for name, (target, _licence) in PHOTOS.items():
        with Image.open(src / name) as im:
            im = im.convert("RGB") if im.mode not in ("L", "RGB") else im
            scale = 320 / min(im.size)
            if scale < 1:
                im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BICUBIC)
            im.save(out / target, quality=90)
        print(out / target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
