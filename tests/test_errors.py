"""Converter failures: one error class, exit 1, the cause's first line, the cause in full with
EDGEKIT_DEBUG=1."""
from __future__ import annotations

import pickle

import pytest

from edgekit.errors import ConversionError, EdgekitError, InputError, first_line


def test_first_line():
    assert first_line(RuntimeError("bad shape\n  at node 3\n")) == "bad shape"
    assert first_line(RuntimeError("\n  indented\nmore")) == "indented"
    assert first_line(KeyError()) == "KeyError"


def test_conversion_error_names_backend_model_precision_and_the_cause():
    exc = ConversionError("openvino", "mobilenet_v2", "int8", ValueError("no kernel for op\nstack..."))
    assert str(exc) == "openvino could not convert mobilenet_v2 to int8: no kernel for op"
    assert isinstance(exc, EdgekitError) and not isinstance(exc, InputError) and exc.exit_code == 1
    again = pickle.loads(pickle.dumps(exc))  # crosses the convert worker's process boundary
    assert type(again) is ConversionError and str(again) == str(exc)


def _convert_in_a_library():
    try:
        raise ValueError("converter internals\nsecond line")
    except ValueError as exc:
        raise ConversionError("tflite", "net", "int8", exc) from exc


def _in_a_worker_process():
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1) as pool:  # as convert's worker runs TFLite conversions
        pool.submit(_convert_in_a_library).result()


def _failing_command(monkeypatch, debug: bool, where):
    import click

    from edgekit.cli import main as cli_main

    @click.command("explode")
    def explode():
        where()

    cli_main.cli.add_command(explode)
    if debug:
        monkeypatch.setenv("EDGEKIT_DEBUG", "1")
    else:
        monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    return cli_main


@pytest.mark.parametrize("where", [_convert_in_a_library, _in_a_worker_process])
@pytest.mark.parametrize("debug", [False, True])
def test_cli_shows_the_cause_only_when_debugging(monkeypatch, capsys, debug, where):
    cli_main = _failing_command(monkeypatch, debug, where)
    try:
        with pytest.raises(SystemExit) as exited:
            cli_main.main(["explode"])
    finally:
        cli_main.cli.commands.pop("explode", None)
    err = capsys.readouterr().err
    assert exited.value.code == 1
    assert "error: tflite could not convert net to int8: converter internals" in err
    assert ("Traceback" in err and "second line" in err) == debug
    assert err.strip().splitlines()[-1].startswith("error: ")  # the one line comes last
