"""Training views of one image: the model's own centre view plus random resized crops with a
horizontal flip. Grayscale, RGBA and palette images arrive as RGB (preprocessing.load_image); a
crop of a tiny image is upsampled to the input size like the centre view is."""
from __future__ import annotations

import math

import numpy as np

from ..preprocessing import Preprocessing

CROP_AREA = (0.35, 1.0)  # fraction of the image a random crop covers
CROP_RATIO = (3 / 4, 4 / 3)
MIN_CROP_PIXELS = 8  # a crop of a 32 px CIFAR image stays at least this wide


def random_resized_crop(image: np.ndarray, size: int, rng: np.random.Generator,
                        interpolation: str = "bilinear") -> np.ndarray:
    """A random crop (CROP_AREA of the image, aspect in CROP_RATIO), flipped half the time,
    resized to ``size`` x ``size`` (uint8 RGB)."""
    from PIL import Image

    h, w = image.shape[:2]
    cw, ch = w, h
    for _ in range(10):
        area = h * w * rng.uniform(*CROP_AREA)
        ratio = math.exp(rng.uniform(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        tw, th = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if min(MIN_CROP_PIXELS, w) <= tw <= w and min(MIN_CROP_PIXELS, h) <= th <= h:
            cw, ch = tw, th
            break
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[interpolation]
    crop = Image.fromarray(image).crop((x0, y0, x0 + cw, y0 + ch)).resize((size, size), resample)
    out = np.asarray(crop)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def views(image: np.ndarray, pre: Preprocessing, n_augmented: int, rng: np.random.Generator) -> np.ndarray:
    """(1 + n_augmented, C, H, W) float32: the centre view (exactly what eval and the devices feed
    the model) first, then the augmented ones, each normalised by ``pre``."""
    out = [pre.apply(image)]
    out += [pre.normalize(random_resized_crop(image, pre.size, rng, pre.interpolation))
            for _ in range(n_augmented)]
    return np.stack(out)
