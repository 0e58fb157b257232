"""`bench --emulate aarch64` on rpi4's .pte programs: ExecuTorch's aarch64 wheel (with torch's)
runs them under qemu, with the same outputs as here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.bench import emulate
from edgekit.errors import EdgekitError

pytest.importorskip("executorch", reason="needs the 'executorch' extra")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def aarch64_root():
    missing = [p for p in (emulate.QEMU, "debootstrap") if emulate.find_program(p) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (apt-get install qemu-user-static debootstrap)")
    try:
        return emulate.prepare_root(print)
    except EdgekitError as exc:
        pytest.skip(f"cannot build the aarch64 root: {exc}")


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    from edgekit.convert import convert

    out = tmp_path_factory.mktemp("emulate-pte") / "rpi4"
    convert("rpi4", "mobilenet_v2", width=0.35, resolution=96, out=out, calib_size=4, check=False,
            weights="random", backend="executorch")
    return out


def test_executorch_wheels_are_wanted_at_this_machines_versions():
    from importlib.metadata import version

    wheels = emulate.wanted_wheels()
    assert wheels["executorch"] == version("executorch")
    assert wheels["torch"] == version("torch").split("+")[0]  # PyPI's aarch64 torch has no +cpu


@pytest.mark.slow
def test_emulated_pte_outputs_match_x86(aarch64_root, build, tmp_path):
    out = subprocess.run([sys.executable, "-m", "edgekit", "bench", str(build), "--emulate", "aarch64",
                          "--json", str(tmp_path / "e.json")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=3600)
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "e.json").read_text())
    rows = {Path(a["artifact"]).name: a for a in data["artifacts"]}
    assert set(rows) == {"model_fp32.pte", "model_int8.pte"} and data["cpu"] == "cortex-a72"
    for name, row in rows.items():
        assert row["ok"] and row["error"] is None, (name, row)
        assert row["aarch64_host"]["machine"] == "aarch64"
        assert row["aarch64_runtime"]["name"] == "executorch"
        assert row["aarch64_runtime"]["version"] == row["x86_runtime"]["version"]
        assert "XnnpackBackend" in row["aarch64_runtime"]["details"]["backends"]
    assert rows["model_fp32.pte"]["match"]["top1_agreement"] == 1.0
