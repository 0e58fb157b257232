"""`convert`, `check` and `bench` on ExecuTorch programs, through the CLI as a user runs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("executorch", reason="needs the 'executorch' extra")

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=900)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "x86"
    done = cli("convert", "-t", "x86", "-b", "executorch", "--weights", "random", "--width", "0.35",
               "--resolution", "96", "--calib-size", "8", "--float-layers", "features.1", "--no-check",
               "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_convert_records_pte_artifacts(build):
    manifest = json.loads((build / "manifest.json").read_text())
    rows = {a["path"]: a for a in manifest["artifacts"]}
    assert set(rows) == {"model_fp32.pte", "model_int8.pte"}
    for name, row in rows.items():
        assert row["backend"] == "executorch" and row["sha256"] and row["size_bytes"] > 0
        assert row["runtime"]["name"] == "executorch" and row["parity"]["n_images"] > 0
        assert row["details"]["ops_outside_xnnpack"] == {} and row["details"]["xnnpack_partitions"] == 1
    assert rows["model_fp32.pte"]["parity"]["max_abs_diff"] < 1e-4 * max(
        1.0, rows["model_fp32.pte"]["parity"]["reference_max_abs"] / 10)
    int8 = rows["model_int8.pte"]["details"]
    assert int8["float_layers"] == ["features.1"] and int8["float_weighted_ops"] == 2
    assert int8["calibration_method"] == "percentile"  # the backend's default
    # the float island is entered and left through XNNPACK converts (int8 <-> fp32), beside the
    # model's own input and output converts
    assert int8["xnnpack_nodes"]["XNNConvert"] == 4 and "XNNConvert" not in rows["model_fp32.pte"]["details"][
        "xnnpack_nodes"]


def test_check_says_everything_is_delegated(build):
    done = cli("check", str(build / "model_int8.pte"), "--json")
    assert done.returncode == 0, done.stderr
    reports = json.loads(done.stdout)
    [report] = reports if isinstance(reports, list) else reports["reports"]
    assert report["backend"] == "executorch" and report["ops_total"] == report["ops_accelerated"] > 50
    assert report["verdict"].startswith("all ")


def test_bench_runs_pte_with_threads(build, tmp_path):
    done = cli("bench", str(build / "model_int8.pte"), "--threads", "1,2", "--iterations", "5",
               "--json", str(tmp_path / "b.json"))
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "b.json").read_text())
    rows = data["results"] if isinstance(data, dict) else data
    seen = {(Path(r["artifact"]).name, r["threads"]) for r in rows}
    assert seen == {("model_int8.pte", 1), ("model_int8.pte", 2)}
    for r in rows:
        assert r["runtime"]["details"]["threads"] == r["threads"] and r["runtime"]["details"]["xnnpack"]
