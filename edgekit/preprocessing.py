"""How an image becomes a model input. One definition, used by calibration, parity, eval and demo."""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# (mean, std) of (pixel / 255 - mean) / std for the common conventions
NORMALISATIONS = {
    "torchvision": (IMAGENET_MEAN, IMAGENET_STD),
    "tensorflow": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # x / 127.5 - 1
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # x / 255 (e.g. MLPerf Tiny's visual wake words)
}


@dataclass(frozen=True)
class Preprocessing:
    """RGB uint8 image -> float32 tensor.

    ``resize``: the shorter side is resized to this, then a centre ``size`` x ``size`` crop is taken.
    With ``resize == 0`` the whole image is stretched to ``size`` x ``size`` (TensorFlow-style).
    Values: ``(pixel / 255 - mean) / std`` per channel; TF's ``x / 127.5 - 1`` is mean = std = 0.5.
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    layout: str = "NCHW"
    interpolation: str = "bilinear"

    @classmethod
    def torchvision(cls, size: int = 224) -> "Preprocessing":
        return cls(size=size, resize=round(size * 256 / 224))

    @classmethod
    def tensorflow(cls, size: int = 224) -> "Preprocessing":
        """TF-slim's evaluation: central 87.5% crop, resize, ``x / 127.5 - 1``. On the ImageNet
        sample this scores Google's MobileNetV2 at 87.4% top-1; stretching the whole image, 82.0%."""
        return cls(size=size, resize=round(size * 256 / 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def normalised(self, name: str) -> "Preprocessing":
        """This with the value range of NORMALISATIONS[name] (resize and crop unchanged)."""
        if name not in NORMALISATIONS:
            raise InputError(f"unknown normalisation '{name}' (choose from {', '.join(NORMALISATIONS)})")
        mean, std = NORMALISATIONS[name]
        return replace(self, mean=mean, std=std)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)

    def geometry(self, image: np.ndarray) -> np.ndarray:
        """Resize/crop an RGB HxWx3 uint8 array to size x size (still uint8)."""
        from PIL import Image

        resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                    "nearest": Image.NEAREST}[self.interpolation]
        pil = Image.fromarray(image)
        if self.resize <= 0:
            return np.asarray(pil.resize((self.size, self.size), resample))
        w, h = pil.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        pil = pil.resize((nw, nh), resample)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        return np.asarray(pil.crop((left, top, left + self.size, top + self.size)))

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 (already size x size) -> float32 in the model's layout, without batch axis."""
        x = pixels.astype(np.float32) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        if self.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x, dtype=np.float32)

    def apply(self, image: np.ndarray) -> np.ndarray:
        return self.normalize(self.geometry(image))


def load_image(path: str | Path) -> np.ndarray:
    """Any readable image (grayscale, RGBA, CMYK, palette, 16-bit) -> RGB HxWx3 uint8."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I"):
                arr = np.asarray(im, dtype=np.float32)
                im = Image.fromarray((arr / max(arr.max(), 1) * 255).astype(np.uint8))
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        # DecompressionBombError: more than twice PIL's MAX_IMAGE_PIXELS (~179 million pixels)
        raise InputError(f"cannot read image {path}: {exc}") from exc


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
