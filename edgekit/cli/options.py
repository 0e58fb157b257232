"""Options shared by several commands, defined once."""
from __future__ import annotations

import click

from ..models import list_models
from ..models.registry import MIN_RESOLUTION


def _positive_width(ctx, param, value):
    if value is not None and not value > 0:
        raise click.BadParameter(f"must be > 0, got {value}")
    return value


def _resolution(ctx, param, value):
    if value is not None and value < MIN_RESOLUTION:
        raise click.BadParameter(f"must be at least {MIN_RESOLUTION}, got {value}")
    return value


width_option = click.option("--width", type=float, default=None, callback=_positive_width,
                            help="Width multiplier (alpha). Default 1.0, or the checkpoint's.")
resolution_option = click.option("--resolution", type=int, default=None, callback=_resolution,
                                 help="Input resolution in pixels. Default 224, or the checkpoint's.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def model_names() -> str:
    return ", ".join(list_models())
