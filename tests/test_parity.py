import numpy as np
import torch

from edgekit.models import create
from edgekit.parity import DEFAULT_TOLERANCES, compare
from edgekit.source import ModelSource


def test_nan_outputs_fail_parity():
    model = create("mobilenet_v3_small", width=0.5, resolution=64)
    images = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    finite = ModelSource.from_module(model).reference(images)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")  # NaN in the weights
    broken = ModelSource.from_module(model).reference(images)
    assert np.isnan(broken).all()
    for precision, tolerance in DEFAULT_TOLERANCES.items():
        failures = tolerance.failures(compare(finite, broken))
        assert failures and "of the artifact's output values are NaN or infinite" in failures[0], precision
        failures = tolerance.failures(compare(broken, finite))
        assert failures and "of the source model's output values are NaN or infinite" in failures[0], precision
    inf = finite.copy()
    inf[0, 0] = np.inf
    assert "1 of the artifact's output values are NaN or infinite" in DEFAULT_TOLERANCES["fp32"].failures(
        compare(finite, inf))
    assert DEFAULT_TOLERANCES["fp32"].failures(compare(finite, finite)) == []
