"""Options shared by several commands, defined once."""
from __future__ import annotations

import click

from ..models import list_models
from ..preprocessing import NORMALISATIONS
from ..models.registry import MAX_RESOLUTION, MAX_WIDTH, MIN_RESOLUTION


def check_width(ctx, param, value):
    if value is not None and not 0 < value <= MAX_WIDTH:
        raise click.BadParameter(f"must be > 0 and at most {MAX_WIDTH:g}, got {value:g}")
    return value


def check_resolution(ctx, param, value):
    if value is not None and not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        raise click.BadParameter(f"must be at least {MIN_RESOLUTION} and at most {MAX_RESOLUTION}, "
                                 f"got {value}")
    return value


width_option = click.option("--width", type=float, default=None, callback=check_width,
                            help="Width multiplier (alpha). Default 1.0, or the checkpoint's.")
resolution_option = click.option("--resolution", type=int, default=None, callback=check_resolution,
                                 help="Input resolution in pixels. Default 224, or the checkpoint's.")
normalisation_option = click.option(
    "--normalisation", type=click.Choice(list(NORMALISATIONS)), default=None,
    help="Input value range the model was trained on: torchvision ((x/255 - ImageNet mean) / std), "
         "tensorflow (x/127.5 - 1), unit (x/255) [default: what the model records, else torchvision].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def model_names() -> str:
    return ", ".join(list_models())
