"""edgekit: MobileNets and your own models to TFLite, Edge TPU, OpenVINO and ONNX Runtime."""
__version__ = "0.1.0"
