"""`bench --emulate aarch64` and .pte programs: not emulated, and said so (executorch_backend.py:
PyPI's aarch64 torch, which ExecuTorch's runtime imports, is the CUDA build)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from edgekit.backends.base import get_backend
from edgekit.bench import emulate

REPO = Path(__file__).resolve().parents[1]


def test_pte_is_not_among_the_emulated_backends():
    assert get_backend("executorch").aarch64_wheels == ()
    assert "executorch" not in [b.name for b in emulate.emulated_backends()]
    assert not {"executorch", "torch"} & set(emulate.wanted_wheels())


def test_emulating_only_pte_says_what_it_runs(tmp_path):
    (tmp_path / "model_fp32.pte").write_bytes(b"not read: refused before any runtime loads")
    out = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(tmp_path), "--emulate", "aarch64"],
                         capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                         timeout=300)
    assert out.returncode == 2, out.stderr
    assert "nothing to emulate" in out.stderr and "onnxruntime and tflite" in out.stderr
    assert "Traceback" not in out.stderr
