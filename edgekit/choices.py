"""Names and defaults the CLI offers as option choices, kept out of the modules that implement them
(those import torch): `edgekit --help` reads them without loading torch."""
ROUNDINGS = ("optimal", "nearest")  # int8 weight rounding (quant/weights.round_weights)
DEFAULT_CALIB_SIZE = 200  # calibration images sampled by convert
