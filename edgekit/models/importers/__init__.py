"""Import published TensorFlow MobileNets (.tflite, Keras .h5) into edgekit's own models."""
from .keras import import_keras
from .tflite import import_tflite

__all__ = ["import_keras", "import_tflite"]
