"""`edgekit demo`: live classification from a camera, stream, video file or image folder."""
from __future__ import annotations

from pathlib import Path

import click

from ..errors import EdgekitError
from .console import console as make_console


def _threads(ctx, param, value: int | None) -> int | None:
    from ..limits import check_threads

    return check_threads(value, what="--threads")


class DemoFailed(EdgekitError):
    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@click.command("demo")
@click.argument("path", required=False)
@click.option("--weights", default=None,
              help="With a model name as PATH: a checkpoint, 'imagenet' or 'random' (runs in PyTorch) "
                   "[default: the model's built-in ImageNet weights].")
@click.option("--source", default="0", show_default=True,
              help="Camera index, /dev/videoN, stream URL (rtsp://...), video file or image folder.")
@click.option("--topk", type=click.IntRange(min=1), default=5, show_default=True,
              help="Predictions shown and recorded per frame.")
@click.option("--threads", type=int, default=None, callback=_threads,
              help="Inference threads [default: the runtime's].")
@click.option("--headless", is_flag=True, help="No window, even when a display is available.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="Record the annotated video (.mp4/.mov/.mkv: mp4v, .avi: MJPG).")
@click.option("--jsonl", type=click.Path(path_type=Path), default=None,
              help="Write one JSON line per frame: frame, time_ms, latency_ms, topk (and file, for "
                   "an image folder).")
@click.option("--json-summary", type=click.Path(path_type=Path), default=None,
              help="Write the end-of-run summary as JSON.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Stop after this many frames.")
@click.option("--realtime", is_flag=True,
              help="Play a video file at its own frame rate, dropping frames like a camera.")
@click.option("--snapshot-dir", type=click.Path(path_type=Path), default=None,
              help="Where the 's' key saves PNG snapshots [default: the current folder].")
@click.option("--backend", default=None, help="In a convert folder: only this backend's artifacts.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="In a convert folder: only artifacts of this precision.")
@click.option("--no-verify", is_flag=True,
              help="Use a build's files even when they no longer match its manifest's sha256.")
def command(path, weights, source, topk, threads, headless, output, jsonl, json_summary, max_frames,
            realtime, snapshot_dir, backend, precision, no_verify) -> None:
    """Classify frames live: PATH is an artifact (.tflite/.onnx/.xml beside its manifest.json), a
    convert output folder (the fastest artifact this host can run is picked), a checkpoint
    (.pth/.safetensors), or a model name (its built-in ImageNet weights, or --weights).

    With a display: a window (q/Esc quit, space pause, s snapshot). Without one, or with
    --headless: record with --output/--jsonl, stop with Ctrl-C. A summary (FPS, inference
    latency, pipeline overhead, per-stage times) is printed at the end.

    Exit status: 0 when the source ends, on q/Esc, --max-frames or Ctrl-C; 1 when a camera or
    stream is lost (after reconnect attempts) or the run fails; 2 for bad input (a camera that
    does not open, a missing file, no frame of the source readable).
    """
    from ..demo import DemoOptions, load_classifier, run_demo
    from ..demo.pipeline import check_options

    err = make_console(stderr=True)

    def say(message: str) -> None:
        err.print(message, highlight=False, markup=False)

    options = DemoOptions(source=source, topk=topk, headless=headless, output=output, jsonl=jsonl,
                          json_summary=json_summary, max_frames=max_frames, realtime=realtime,
                          snapshot_dir=snapshot_dir)
    from ..demo.select import check_model

    check_model(path, weights)  # cheap: no model is loaded yet
    check_options(options, [path, weights])  # a bad source or output fails before the model loads
    classifier = load_classifier(path, weights, threads, backend, precision, say,
                                 verify=not no_verify)
    say(f"model: {classifier.path} ({classifier.title})")
    if classifier.reason:
        say(f"chosen: {classifier.reason}")
    for notice in classifier.notices:
        say(f"notice: {notice}")
    summary = run_demo(classifier, options, say)
    for notice in summary.notices:
        if "reconnect" not in notice:  # reconnects were reported as they happened
            say(f"notice: {notice}")
    for line in summary.lines():
        click.echo(line)
    if summary.error:
        raise DemoFailed(summary.error, summary.exit_code)
