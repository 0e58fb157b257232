"""`bench --device` with a .pte: the same runner over SSH (a real sshd on this machine, as in
test_remote_bench.py, whose fixtures this reuses)."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="needs the 'executorch' extra")
pytest.importorskip("paramiko", reason="needs the 'remote' extra (paramiko)")

from test_remote_bench import _fp32_artifact, home, inventory, run, sshd  # noqa: E402,F401

from edgekit.bench.remote import resolve_devices  # noqa: E402


@pytest.fixture(scope="module")
def pte_model(tmp_path_factory):
    return _fp32_artifact(tmp_path_factory.mktemp("remote-pte"), "executorch")


def test_remote_bench_runs_a_pte(home, sshd, pte_model, tmp_path):
    assert pte_model.suffix == ".pte"
    devices = resolve_devices(["pi"], inventory(tmp_path / "devices.yaml", sshd, pi={}))
    outcome = run(pte_model, devices)
    assert outcome.failures == []
    [r] = outcome.results
    assert r.backend == "executorch" and r.precision == "fp32" and r.threads == 1 and r.n == 5
    assert r.runtime["name"] == "executorch" and r.runtime["details"]["threads"] == 1
    assert r.runtime["details"]["xnnpack"] and r.latency_ms["p50"] > 0
    assert r.size_bytes == pte_model.stat().st_size and not Path(r.extra["remote_dir"]).exists()
