"""Calibration data: real images, prepared with the model's own preprocessing, for every backend."""
from .dataset import DEFAULT_CALIBRATION_DIR, CalibrationSet, list_images, load_calibration

__all__ = ["DEFAULT_CALIBRATION_DIR", "CalibrationSet", "list_images", "load_calibration"]
