"""`bench --paired`: one process, alternating invocations, a ratio of medians with a bootstrap
interval. The method is checked on artifacts whose order is known: an artifact against itself (the
interval must hold 1.0) and a model against the same network at 4x the pixels (must be slower)."""
import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, get_backend
from edgekit.bench.paired import bench_paired, ratio_of_medians, to_csv
from edgekit.errors import InputError
from edgekit.models.loading import load_model
from edgekit.source import ModelSource

pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    """The same small MobileNetV2 at 64 and at 128 pixels (4x the work), fp32 ONNX."""
    out = tmp_path_factory.mktemp("paired")
    paths = {}
    for resolution in (64, 128):
        source = ModelSource.from_module(load_model("mobilenet_v2", width=0.35, resolution=resolution,
                                                    weights="random"))
        paths[resolution] = get_backend("onnxruntime").convert(
            source, "fp32", None, out / f"m{resolution}.onnx", ConvertOptions()).path
    return paths


def test_ratio_of_medians_and_its_interval():
    rng = np.random.default_rng(1)
    a = 2.0 + rng.gamma(2.0, 0.05, 2000)
    drift = np.sin(np.arange(2000) / 50.0) * 0.5  # a slow spell hits both members of a pair
    ratio, low, high = ratio_of_medians(a + drift, 1.5 * a + 1.5 * drift)
    assert ratio == pytest.approx(1.5, rel=0.01) and low < 1.5 < high and high - low < 0.05
    same_ratio, same_low, same_high = ratio_of_medians(a, a)
    assert same_ratio == 1.0 and same_low == same_high == 1.0
    with pytest.raises(InputError):
        ratio_of_medians(a, a[:-1])
    with pytest.raises(InputError):
        ratio_of_medians(a, np.where(np.arange(2000) == 3, np.nan, a))


def test_an_artifact_against_itself_is_even(onnx_pair):
    small = onnx_pair[64]
    result = bench_paired([small, small], threads=1, pairs=600, warmup=20)
    (ratio,) = result.ratios
    assert ratio.low <= 1.0 <= ratio.high, ratio
    assert not ratio.distinguishable
    assert len(result.timings) == 2 and all(t.n == 600 for t in result.timings)
    # one global ONNX Runtime pool: a per-session pool still spinning after its run would take a
    # core from the next session's (it doubled an fp32 p50 here)
    assert all(t.runtime["details"]["thread_pool"] == "global" for t in result.timings)


def test_four_times_the_pixels_is_slower_and_the_baseline_can_be_chosen(onnx_pair):
    result = bench_paired([onnx_pair[64], onnx_pair[128]], threads=1, pairs=300, warmup=10)
    (ratio,) = result.ratios
    assert ratio.ratio > 1.5 and ratio.low > 1.0 and ratio.distinguishable
    flipped = bench_paired([onnx_pair[64], onnx_pair[128]], threads=1, pairs=100, warmup=5,
                           baseline=onnx_pair[128].name)
    assert flipped.baseline.artifact == str(onnx_pair[128]) and flipped.ratios[0].ratio < 1.0
    data = flipped.to_dict()
    assert data["ratios"][0]["speedup"] > 1.0 and data["baseline"] == str(onnx_pair[128])
    rows = to_csv([flipped]).splitlines()
    assert rows[0].startswith("device,threads,pairs,artifact") and len(rows) == 3


def test_errors(onnx_pair, tmp_path):
    with pytest.raises(InputError, match="at least two"):
        bench_paired([onnx_pair[64]])
    with pytest.raises(InputError, match="none of the artifacts"):
        bench_paired([onnx_pair[64], onnx_pair[128]], baseline="other.onnx")
    with pytest.raises(InputError):
        bench_paired([onnx_pair[64], onnx_pair[128]], threads=100000)


def test_cli_paired_table_json_and_csv(onnx_pair, tmp_path, capsys):
    from edgekit.cli.main import main

    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    with pytest.raises(SystemExit) as info:
        main(["bench", str(onnx_pair[64]), str(onnx_pair[128]), "--paired", "--pairs", "50", "--threads", "1",
              "--json", str(out_json), "--csv", str(out_csv)])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert "time vs baseline" in printed and "m128.onnx" in printed
    import json

    (data,) = json.loads(out_json.read_text())
    assert data["pairs"] == 50 and data["ratios"][0]["ratio"] > 1.0
    assert len(out_csv.read_text().splitlines()) == 3
    with pytest.raises(SystemExit) as info:
        main(["bench", str(onnx_pair[64]), str(onnx_pair[128]), "--paired", "--rounds", "3"])
    assert info.value.code == 2
