import numpy as np
import torch

from edgekit.models import create
from edgekit.parity import compare
from edgekit.source import ModelSource
from edgekit.targets import ParitySpec

TOLERANCES = {p: ParitySpec().tolerance(p) for p in ("fp32", "fp16", "int8")}


def test_nan_outputs_fail_parity():
    model = create("mobilenet_v3_small", width=0.5, resolution=64)
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    finite = ModelSource.from_module(model).reference(images)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")  # NaN in the weights
    broken = ModelSource.from_module(model).reference(images)
    assert np.isnan(broken).all()
    for precision, tolerance in TOLERANCES.items():
        failures = tolerance.failures(compare(finite, broken))
        assert failures and "of the artifact's output values are NaN or infinite" in failures[0], precision
        failures = tolerance.failures(compare(broken, finite))
        assert failures and "of the source model's output values are NaN or infinite" in failures[0], precision
    inf = finite.copy()
    inf[0, 0] = np.inf
    assert "1 of the artifact's output values are NaN or infinite" in TOLERANCES["fp32"].failures(
        compare(finite, inf))
    assert TOLERANCES["fp32"].failures(compare(finite, finite)) == []


def test_the_target_sets_every_precisions_tolerance():
    """The fp16 SQNR floor is the target's, like the others (a parity section can change it)."""
    assert ParitySpec().tolerance("fp16").to_dict() == {"min_top1_agreement": 0.99, "min_sqnr_db": 30.0}
    spec = ParitySpec(fp16_min_sqnr_db=40.0, int8_min_agreement=0.9)
    assert spec.tolerance("fp16").min_sqnr_db == 40.0 and spec.tolerance("int8").min_top1_agreement == 0.9
    reference = np.eye(4, dtype=np.float32) * 10
    noisy = reference + np.float32(0.1)  # SQNR 34 dB, top-1 unchanged
    assert ParitySpec().tolerance("fp16").failures(compare(reference, noisy)) == []
    assert spec.tolerance("fp16").failures(compare(reference, noisy))[0].startswith("SQNR 34")
