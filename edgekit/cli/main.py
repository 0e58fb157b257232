"""The `edgekit` command: a click group, one module per command, one place for errors.

Exit codes: 0 ok, 1 failure, 2 bad input/usage, 3 missing optional dependency,
4 parity check failed, 5 external tool failed, 130 interrupted.
"""
from __future__ import annotations

import os
import sys
import traceback

# Before torch loads: its OpenMP threads then sleep rather than spin at barriers. Same speed
# alone; beside `convert`'s worker process the weight rounding measured 18 s instead of 29 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402

from .. import __version__
from ..errors import EdgekitError  # noqa: E402

CONTEXT = dict(help_option_names=["-h", "--help"], max_content_width=100)


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="edgekit")
def cli() -> None:
    """edgekit: build, verify and benchmark edge artifacts for MobileNets and your own models."""


def _register() -> None:
    from . import models_cmd, weights_cmd

    cli.add_command(models_cmd.models)
    cli.add_command(weights_cmd.weights)
    for module_name in ("targets_cmd", "convert_cmd", "quant_report_cmd", "bench_cmd", "eval_cmd",
                        "demo_cmd", "check_cmd", "train_cmd"):
        try:
            module = __import__(f"edgekit.cli.{module_name}", fromlist=["command"])
        except ModuleNotFoundError as exc:
            if exc.name != f"edgekit.cli.{module_name}":
                raise
            continue
        cli.add_command(module.command)


_register()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except EdgekitError as exc:
        if os.environ.get("EDGEKIT_DEBUG"):
            # with its cause chain; an error from convert's worker process carries the worker's
            # traceback as its cause (concurrent.futures' _RemoteTraceback)
            traceback.print_exception(exc, file=sys.stderr)
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug, not a user mistake: one line unless debugging
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        click.echo(f"internal error: {type(exc).__name__}: {exc} "
                   "(set EDGEKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
