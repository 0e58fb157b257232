"""Per-layer int8 error report and the accuracy-budgeted mixed precision built on it."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.backends.base import ConvertOptions, get_backend
from edgekit.backends.layer_names import in_layers, layer_names, module_path
from edgekit.backends.onnx_export import export_onnx
from edgekit.backends.onnxruntime_backend import prepare_for_quantization
from edgekit.errors import InputError
from edgekit.quant.mixed_precision import Evaluation, evaluate, fit_budget
from edgekit.models.loading import load_model, randomize_statistics
from edgekit.backends.onnxruntime_report import layers_of, onnx_report
from edgekit.quant.report import RANKING, prepared_report, simulated_report
from edgekit.source import ModelSource

from conftest import shared_path

onnx = pytest.importorskip("onnx", reason="needs the 'onnx' extra")
pytest.importorskip("onnxruntime", reason="needs the 'onnx' extra")


def test_layer_names_from_onnx_scopes():
    assert module_path("/features/features.3/conv/conv.1/conv.1.0/Conv") == "features.3.conv.1.0"
    v2_block = ["/features/features.3/conv/conv.0/conv.0.0/Conv",
                "/features/features.3/conv/conv.1/conv.1.0/Conv", "/features/features.3/conv/conv.2/Conv",
                "/classifier/classifier.1/Gemm", "Conv_12"]
    assert list(layer_names({n: module_path(n) for n in v2_block}).values()) == [
        "features.3.conv.0", "features.3.conv.1", "features.3.conv.2", "classifier", "Conv_12"]
    assert in_layers("inner.features.3.conv.1.0", ["features.3.conv.1"])  # wrapped for NHWC
    assert not in_layers("features.13.conv", ["features.3.conv"])


@pytest.fixture(scope="module")
def source():
    model = load_model("mobilenet_v2", width=0.5, resolution=96, weights="random")
    randomize_statistics(model, seed=0)
    return ModelSource.from_module(model)


@pytest.fixture(scope="module")
def models(source, calibration, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    float_onnx = prepare_for_quantization(export_onnx(source, folder / "f.onnx"), folder / "fp.onnx")
    int8 = get_backend("onnxruntime").convert(source, "int8", calibration, folder / "q.onnx",
                                              ConvertOptions(activation_type="uint8"))
    return float_onnx, int8.path


def test_layers_cover_every_convolution(models):
    layers = layers_of(onnx.load(str(models[0])).graph)
    names = [layer.name for layer in layers]
    assert names[0] == "features.0" and names[-1] == "classifier"
    assert "features.3.conv.1" in names  # the depthwise conv + BN + ReLU6 of block 3
    assert len(names) == len(set(names)) == 53  # stem, 2 + 16 * 3 in the blocks, last conv, classifier


def _damage(int8_path, layer: str, out, part: str = "weight"):
    """Corrupt the int8 weights of ``layer`` (its per-channel weight scales off by up to 4x) or
    its bias (per-channel scales times -8..8)."""
    model = onnx.load(str(int8_path))
    producer = {o: n for n in model.graph.node for o in n.output}
    conv = next(n for n in model.graph.node
                if n.op_type == "Conv" and in_layers(module_path(n.name), [layer]))
    dq = producer[conv.input[1 if part == "weight" else 2]]
    init = next(i for i in model.graph.initializer if i.name == dq.input[1])
    scale = onnx.numpy_helper.to_array(init)
    factors = np.random.default_rng(0).uniform(*((0.25, 4.0) if part == "weight" else (-8.0, 8.0)), scale.shape)
    init.CopyFrom(onnx.numpy_helper.from_array((scale * factors).astype(np.float32), init.name))
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize("layer", ["features.5.conv.1", "features.12.conv.0"])
def test_report_ranks_a_damaged_layer_first(models, calibration, tmp_path, layer):
    float_onnx, int8 = models
    healthy = onnx_report(float_onnx, int8, calibration.images[:8])
    damaged = onnx_report(float_onnx, _damage(int8, layer, tmp_path / "damaged.onnx"),
                          calibration.images[:8])
    assert healthy.ranked()[0].layer != layer
    top = damaged.ranked()[0]
    assert top.layer == layer, [(e.layer, e.alone_sqnr_db) for e in damaged.ranked()[:3]]
    assert top.sqnr_db < next(e for e in healthy.layers if e.layer == layer).sqnr_db - 3
    assert damaged.output_sqnr_db < healthy.output_sqnr_db
    row = top.to_dict()
    assert set(row) >= {"layer", "ops", "sqnr_db", "cosine", "loss_db", "added_noise", "alone_sqnr_db", "rank"}
    assert top.alone_sqnr_db < 20 and top.added_noise > 0.05  # both views point at it
    assert -1.0 <= row["cosine"] <= 1.0


def test_alone_sqnr_reads_the_int8_bias(models, calibration, tmp_path):
    """The int8 model's bias (bias-corrected when convert built it) is a DequantizeLinear output
    under the float bias's name: with only its layer quantized, the layer must use that one."""
    float_onnx, int8 = models
    layer = "features.12.conv.0"
    images = calibration.images[:8]
    damaged = onnx_report(float_onnx, _damage(int8, layer, tmp_path / "bias.onnx", part="bias"), images)
    before, after = (next(e.alone_sqnr_db for e in report.layers if e.layer == layer)
                     for report in (onnx_report(float_onnx, int8, images), damaged))
    assert after < before - 6, (before, after)


def test_report_on_shared_constants(tmp_path, capsys):
    """Equal biases (a random model's zero SE biases) are one constant in the build's float ONNX,
    the others Identity nodes of it; the one-layer-quantized variant replaces such a bias by the
    int8 model's dequantized one and must drop the Identity (it was an invalid model: 'Duplicate
    definition of name features.6.block.2.fc1.bias')."""
    from edgekit.convert import convert

    build = tmp_path / "build"
    convert("x86", "mobilenet_v3_small", width=0.75, resolution=96, backend="onnxruntime",
            calib_size=4, out=build, check=False, weights="random")
    assert any(n.op_type == "Identity" and n.output[0].endswith(".bias")
               for n in onnx.load(build / "model_fp32.onnx").graph.node)
    code, _, err = _run(capsys, "quant-report", str(build), "-n", "2", "--json", str(tmp_path / "r.json"))
    assert code == 0, err


def test_float_layers_in_onnxruntime(source, calibration, tmp_path):
    backend = get_backend("onnxruntime")
    kept = ("features.0", "features.5.conv.1")
    art = backend.convert(source, "int8", calibration, tmp_path / "mixed.onnx",
                          ConvertOptions(float_layers=kept))
    model = onnx.load(str(art.path))
    quantized_inputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for node in model.graph.node:
        if node.op_type == "Conv" and in_layers(module_path(node.name), kept):
            assert node.input[1] not in quantized_inputs  # float weights
    assert art.details["float_layers"] == list(kept)
    report = onnx_report(prepare_for_quantization(export_onnx(source, tmp_path / "f.onnx"),
                                                  tmp_path / "fp.onnx"), art.path, calibration.images[:4])
    first = next(e for e in report.layers if e.layer == "features.0")
    assert first.sqnr_db > 40  # float all the way: only the input's quantization reaches it
    assert first.ops.startswith("Conv")
    with pytest.raises(InputError, match="no layer named 'features.99'"):
        backend.convert(source, "int8", calibration, tmp_path / "x.onnx",
                        ConvertOptions(float_layers=("features.99",)))
    assert not (tmp_path / "x.onnx").exists()


def _fake_builds(drops: dict[int, float]):
    class Art:
        size_bytes = 100

    built = []

    def build(layers):
        built.append(len(layers))
        return Art(), Evaluation(drops[len(layers)], None, 1 - drops[len(layers)] / 100)

    return build, built


def test_budget_search_finds_the_smallest_float_set():
    drops = {0: 9.0, 1: 6.0, 2: 4.0, 3: 2.5, 4: 1.0, 5: 0.8, 6: 0.5, 7: 0.5, 8: 0.2}
    build, built = _fake_builds(drops)
    ranking = [f"layer{i}" for i in range(8)]
    _, record = fit_budget(build, ranking, 3.0, build(()), "top-1 disagreement", [])
    assert record.met and record.float_layers == ranking[:3]
    assert built == [0, 1, 2, 4, 3]  # doubling, then bisection between 2 and 4
    build, _ = _fake_builds(drops)
    _, record = fit_budget(build, ranking, 0.1, build(()), "top-1 disagreement", [], max_float=4)
    assert not record.met and record.float_layers == ranking[:4]  # best within the limit


def test_evaluation_metrics():
    reference = np.eye(4)[[0, 1, 2, 3]]
    logits = np.eye(4)[[0, 1, 2, 0]]
    assert evaluate(logits, reference, None).drop_points == pytest.approx(25.0)
    labelled = evaluate(logits, reference, np.array([0, 1, 3, 3]))  # float 3/4 right, int8 2/4
    assert labelled.drop_points == pytest.approx(25.0) and labelled.top1 == 0.5
    # 10 of 200 disagreeing is 5 points exactly: a budget of 5 is met (was 5.000000000000004)
    reference = np.eye(2)[np.zeros(200, int)]
    logits = np.eye(2)[(np.arange(200) < 10).astype(int)]
    assert evaluate(logits, reference, None).drop_points <= 5


@pytest.mark.slow
def test_budget_is_met_on_real_mobilenet_v3(tmp_path):
    """Real weights, real runtime: keep the worst layers float until half the int8 loss is gone."""
    from edgekit.calibration import load_calibration
    from edgekit.models.importers import import_tflite

    model = import_tflite(shared_path("models", "mobilenet_v3_small_1.0_224.uint8.tflite"),
                          "mobilenet_v3_small")
    source = ModelSource.from_module(model)
    calib = load_calibration(shared_path("imagenet-sample"), model.meta.preprocessing, 48)
    val = load_calibration(shared_path("imagenet-sample"), model.meta.preprocessing, 64, seed=7)
    reference = source.reference(val.images)
    backend = get_backend("onnxruntime")

    def build(layers):
        art = backend.convert(source, "int8", calib, tmp_path / f"{len(layers)}.onnx",
                              ConvertOptions(float_layers=tuple(layers)))
        return art, evaluate(backend.load(art).run(val.images), reference, None)

    first = build(())
    assert first[1].drop_points > 4  # V3-Small's int8 trouble is real
    report = simulated_report(source, calib, ConvertOptions(), calib.images[:16])
    budget = first[1].drop_points / 2
    ranking = [e.layer for e in report.ranked()]
    chosen, record = fit_budget(build, ranking, budget, first, "top-1 disagreement", [],
                                max_float=len(ranking))
    assert record.met and 1 <= len(record.float_layers) < len(ranking)
    smaller = [t for t in record.trials if len(t.float_layers) < len(record.float_layers)]
    assert all(t.drop_points > budget for t in smaller)  # the fewest layers that meet it
    final = evaluate(backend.load(chosen).run(val.images), reference, None)
    assert final.drop_points <= budget
    assert chosen.size_bytes > first[0].size_bytes  # float weights cost size


def _cli(*args: str):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "edgekit.cli.main", *args], capture_output=True, text=True)


def test_quant_report_and_budget_commands(tmp_path):
    import json

    small = ["--model", "mobilenet_v2", "--weights", "random", "--width", "0.35", "--resolution", "96"]
    out = _cli("quant-report", *small, "--calib-size", "8", "-n", "4", "--top", "5",
               "--json", str(tmp_path / "r.json"))
    assert out.returncode == 0, out.stderr
    assert "int8 error per layer" in out.stdout and "features.0" in json.loads((tmp_path / "r.json").read_text())["layers"][0]["layer"]
    build = tmp_path / "build"
    out = _cli("convert", "--target", "x86", *small, "--backend", "onnxruntime", "--precision", "int8",
               "--calib-size", "8", "--max-accuracy-drop", "100", "--out", str(build))
    assert out.returncode == 0, out.stderr
    mixed = json.loads((build / "manifest.json").read_text())["artifacts"][0]["details"]["mixed_precision"]
    assert mixed["met"] and mixed["float_layers"] == [] and mixed["budget_points"] == 100
    out = _cli("quant-report", str(build))  # no fp32 artifact in that build
    assert out.returncode == 2 and "no ONNX Runtime fp32 + int8 pair" in out.stderr
    out = _cli("convert", "--target", "x86", *small, "--backend", "onnxruntime", "--precision", "int8",
               "--calib-size", "8", "--float-layers", "features.99", "--out", str(tmp_path / "bad"))
    assert out.returncode == 2 and "no layer named 'features.99'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "bad" / "model_int8.onnx").exists()


def test_a_missed_budget_fails_the_check(tmp_path):
    """convert writes the best try and the manifest, then fails naming the budget it missed: no
    disagreement at all with the float model, for random weights on the 13 bundled photos (54
    points all int8) with one layer float at most."""
    import json

    from edgekit.convert import convert
    from edgekit.errors import ParityError

    model = load_model("mobilenet_v2", width=0.35, resolution=96, weights="random")
    with pytest.raises(ParityError, match=r"accuracy budget not met: top-1 disagreement [1-9]\d*\.\d > 0 points "
                                          r"with up to 1 layers float"):
        convert("x86", model, backend="onnxruntime", precision="int8", calib_size=13,
                max_accuracy_drop=0, max_float_layers=1, out=tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    record = manifest["artifacts"][0]
    assert not record["parity_ok"] and (tmp_path / "model_int8.onnx").is_file()
    mixed = record["details"]["mixed_precision"]
    assert not mixed["met"] and [len(t["float_layers"]) for t in mixed["trials"]] == [0, 1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model_int8.onnx"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    """The CLI in this process (its real exit codes and messages): (exit code, stdout, stderr)."""
    from edgekit.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out = capsys.readouterr()
    return exited.value.code, out.out, out.err


SMALL = ("--model", "mobilenet_v2", "--weights", "random", "--width", "0.35", "--resolution", "96")


def test_quant_report_on_a_build_compares_on_its_calibration_images(tmp_path, capsys):
    """A build folder is compared on the images its manifest says it was calibrated on (not the
    bundled photos); when they are gone, on the bundled photos with a note saying so."""
    import json
    import shutil

    from edgekit.calibration import DEFAULT_CALIBRATION_DIR, list_images
    from edgekit.convert import convert

    calib = tmp_path / "calib"
    calib.mkdir()
    for photo in list_images(DEFAULT_CALIBRATION_DIR)[:6]:
        shutil.copy(photo, calib / photo.name)
    build = tmp_path / "build"
    convert("x86", "mobilenet_v2", width=0.35, resolution=96, backend="onnxruntime", calib=calib,
            calib_size=6, out=build, check=False, weights="random")
    code, out, err = _run(capsys, "quant-report", str(build), "-n", "4", "--top", "3",
                          "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_images"] == 4 and report["notes"] == []
    assert report["images"] == f"4 of the 6 images the build was calibrated on ({calib})"
    assert str(build) in report["subject"] and "percentile on 6 images" in report["subject"]
    assert str(calib) in out and "ranked by logits SQNR with only that layer quantized" in out
    # the ranking is the one the help, the table and the README name
    assert report["ranking"] == RANKING
    ranked = sorted(report["layers"], key=lambda e: e["rank"])
    assert [e["alone_sqnr_db"] for e in ranked] == sorted(e["alone_sqnr_db"] for e in ranked)

    code, _, err = _run(capsys, "quant-report", str(build), "--calib-method", "entropy")
    assert code == 2 and "--calib-method does not apply to a build folder" in err
    assert "quantized already (calibrated with percentile on 6 images" in err

    calib.rename(tmp_path / "moved")
    code, _, err = _run(capsys, "quant-report", str(build), "-n", "3", "--top", "1",
                        "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert f"the images the build was calibrated on ({calib}) are not there any more" in err
    assert report["images"].startswith("3 bundled photos") and "not there any more" in report["notes"][0]


def test_quant_report_on_a_model_refuses_before_the_work_and_says_what_it_simulated(tmp_path, capsys,
                                                                                    monkeypatch):
    import json

    import edgekit.quant.report as library

    def never(*_args, **_kwargs):
        raise AssertionError("quantized before refusing")

    with monkeypatch.context() as patched:
        patched.setattr(library, "prepared_report", never)
        code, _, err = _run(capsys, "quant-report", *SMALL, "--target", "rpi9",
                            "--json", str(tmp_path / "made" / "r.json"))
        assert code == 2 and "unknown target 'rpi9'" in err and "quantizing" not in err
        assert not (tmp_path / "made").exists()  # the folder --json made is gone with the run
        code, _, err = _run(capsys, "quant-report", *SMALL, "--calib-method", "mse")
        assert code == 2 and "has no 'mse' calibration" in err and "quantizing" not in err
        (tmp_path / "afile").write_text("")
        code, _, err = _run(capsys, "quant-report", *SMALL, "--json", str(tmp_path / "afile" / "r.json"))
        assert code == 2 and "cannot write --json" in err and "quantizing" not in err

    # a target without an ONNX Runtime build: its own int8 settings, said; --json's folder is made
    path = tmp_path / "new" / "sub" / "r.json"
    code, out, err = _run(capsys, "quant-report", *SMALL, "--target", "intel-cpu", "--calib-size", "8",
                          "-n", "3", "--top", "3", "--json", str(path))
    assert code == 0, err
    report = json.loads(path.read_text())
    assert "intel-cpu has no ONNX Runtime build" in report["notes"][0] and report["notes"][0] in err
    assert "intel-cpu's openvino int8 build: uint8 activations" in report["subject"]
    assert "mean_minmax calibration" in report["subject"]  # OpenVINO's default method
    assert report["images"].startswith("3 of the 8 calibration images")


def test_readme_and_help_name_the_ranking_the_code_uses():
    from pathlib import Path

    from click.testing import CliRunner

    from edgekit.cli.quant_report_cmd import command

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## When int8 loses accuracy", 1)[1].split("\n## ", 1)[0]
    assert "by the added noise" not in " ".join(section.split())
    assert "logits SQNR with only that layer quantized" in " ".join(section.split())
    assert "ranked by that last figure" in " ".join(CliRunner().invoke(command, ["--help"]).output.split())


@pytest.mark.slow
def test_model_report_matches_the_artifact_convert_builds(tmp_path):
    """Model mode quantizes the weights convert prepares (rounding + bias correction) and compares
    with the float model: its logits SQNR is the real artifact's (V3-Small: 3.5 dB against 13.7
    when the bias-corrected model stood as the float reference)."""
    from edgekit.calibration import load_calibration
    from edgekit.convert import convert
    from edgekit.models.importers import import_tflite

    model = import_tflite(shared_path("models", "mobilenet_v3_small_1.0_224.uint8.tflite"),
                          "mobilenet_v3_small")
    manifest = convert("x86", model, backend="onnxruntime", precision="int8",
                       calib=shared_path("imagenet-sample"), calib_size=16, out=tmp_path, check=False)
    artifact = manifest.artifacts[0].parity["sqnr_db"]  # on the 16 calibration images
    source = ModelSource.from_module(model)
    calib = load_calibration(shared_path("imagenet-sample"), model.meta.preprocessing, 16, method="percentile")
    report = prepared_report(source, calib, ConvertOptions(activation_type="uint8",
                                                           calibration_method="percentile"), calib.images)
    assert artifact > 8
    assert abs(report.output_sqnr_db - artifact) < 1.0, (report.output_sqnr_db, artifact)


def test_native_hard_activations_compare_node_by_node_with_the_decomposed_export(tmp_path):
    """ONNX Runtime's fp32 artifact uses ONNX's HardSwish/HardSigmoid, its int8 one the
    Add/Clip/Mul form: the report rewrites the first into the second, names and values."""
    import onnx
    import onnxruntime as ort
    import torch

    from edgekit.backends.onnx_export import export_onnx
    from edgekit.models import create
    from edgekit.models.loading import randomize_statistics
    from edgekit.backends.onnxruntime_report import decomposed_hard_activations
    from edgekit.source import ModelSource

    model = create("mobilenet_v3_small", width=0.5, resolution=64)
    randomize_statistics(model)
    source = ModelSource.from_module(model.eval())
    native = export_onnx(source, tmp_path / "native.onnx", native_hard_activations=True)
    plain = export_onnx(source, tmp_path / "plain.onnx")
    ops = [n.op_type for n in onnx.load(str(native)).graph.node]
    assert ops.count("HardSwish") > 0 and ops.count("HardSigmoid") > 0 and "Clip" not in ops
    rewritten = decomposed_hard_activations(onnx.load(str(native)))
    onnx.checker.check_model(rewritten)

    def named(graph):
        # (Identity: aliases of equal initializers, numbered by the exporter)
        return [(n.name, n.op_type, tuple(n.output)) for n in graph.node if n.op_type not in ("Constant", "Identity")]

    assert named(rewritten.graph) == named(onnx.load(str(plain)).graph)
    x = torch.randn(1, 3, 64, 64).numpy()
    run = lambda m: ort.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]  # noqa: E731
    np.testing.assert_allclose(run(rewritten.SerializeToString()), run(str(plain)), atol=1e-5)
    np.testing.assert_allclose(run(str(native)), run(str(plain)), atol=1e-4)
