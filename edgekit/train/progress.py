"""What training reports as it goes: nothing (the Python API's default) or rich progress bars."""
from __future__ import annotations


class Silent:
    def say(self, message: str) -> None: ...
    def extract_start(self, what: str, total: int) -> None: ...
    def extract_step(self, done: int, total: int) -> None: ...
    def extract_end(self) -> None: ...
    def epoch_start(self, epoch: int, epochs: int, images: int) -> None: ...
    def batch(self, seen: int, loss: float, top1: float, images_per_second: float) -> None: ...
    def epoch_end(self, record, improved: bool) -> None: ...


class RichReporter(Silent):
    """One bar per feature extraction and per epoch: loss, accuracy, images/s, ETA."""

    def __init__(self, console):
        self.console = console
        self._progress = None
        self._task = None

    def say(self, message: str) -> None:
        self.console.print(message, highlight=False)

    def _open(self, description: str, total: int, fields: str) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn(fields), TimeElapsedColumn(), TextColumn("ETA"),
                                  TimeRemainingColumn(), console=self.console, transient=False)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, stats="")

    def _close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def extract_start(self, what: str, total: int) -> None:
        self._open(what, total, "{task.fields[stats]}")

    def extract_step(self, done: int, total: int) -> None:
        if self._progress is not None:
            task = self._progress.tasks[0]
            rate = done / task.elapsed if task.elapsed else 0.0
            self._progress.update(self._task, completed=done, stats=f"{rate:.0f} images/s")

    def extract_end(self) -> None:
        self._close()

    def epoch_start(self, epoch: int, epochs: int, images: int) -> None:
        self._open(f"epoch {epoch}/{epochs}", images, "{task.fields[stats]}")

    def batch(self, seen: int, loss: float, top1: float, images_per_second: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=seen,
                                  stats=f"loss {loss:.3f} acc {top1:.1%} {images_per_second:,.0f} images/s")

    def epoch_end(self, record, improved: bool) -> None:
        if self._progress is not None:
            self._progress.update(self._task, stats=f"loss {record.loss:.3f} acc {record.train_top1:.1%} "
                                  f"{record.images_per_second:,.0f} images/s"
                                  + (f"  val {record.val_top1:.1%}" if record.val_top1 is not None else "")
                                  + ("  saved" if improved else ""))
        self._close()
