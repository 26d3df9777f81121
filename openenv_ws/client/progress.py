"""What ``run_episodes()`` shows while it runs: a rich progress bar on a terminal, plain lines elsewhere.

On a terminal the bar shows episodes done out of all, episodes/s, steps/s, elapsed time and an ETA,
redrawn in place (``rich``, imported only then). Anywhere else (a file, a CI log, a notebook's
captured stream) it writes one plain line every :data:`PLAIN_INTERVAL` seconds and one at the
end: no carriage returns or escape codes to garble a log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TextIO

import anyio

REFRESH = 0.25
"""Seconds between redraws of the bar on a terminal."""
PLAIN_INTERVAL = 10.0
"""Seconds between plain lines when not on a terminal."""


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class EpisodeProgress:
    """The counters of a run (updated by ``run_episodes``), and how they are shown on ``stream``."""

    total: int
    stream: TextIO | None
    running: int = 0
    finished: int = 0
    failed: int = 0
    retried: int = 0
    steps: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def done(self) -> int:
        return self.finished + self.failed

    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before the first episode ends."""
        if not self.done:
            return None
        return (self.total - self.done) * (time.monotonic() - self.started) / self.done

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        eta = self.eta()
        return (
            f"episodes {self.done}/{self.total} | running {self.running} | "
            f"finished {self.finished} | failed {self.failed} | retried {self.retried} | "
            f"steps {self.steps} ({self.steps / elapsed:,.0f}/s) | {elapsed:,.1f}s"
            + (f" | eta {_clock(eta)}" if eta is not None and self.done < self.total else "")
        )

    def _details(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return (
            f"running {self.running} · failed {self.failed} · retried {self.retried} · "
            f"{self.steps:,} steps ({self.steps / elapsed:,.0f}/s)"
        )

    async def show(self) -> None:
        """Show progress until cancelled; then the final state (call it in a task, cancel it at the end)."""
        assert self.stream is not None
        if self.stream.isatty():
            await self._show_bar()
        else:
            await self._show_lines()

    async def _show_lines(self) -> None:
        stream = self.stream
        assert stream is not None
        try:
            while True:
                await anyio.sleep(PLAIN_INTERVAL)
                stream.write(self.line() + "\n")
                stream.flush()
        finally:
            stream.write(self.line() + "\n")
            stream.flush()

    async def _show_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class TwoLines(Progress):
            """The bar, then a line of counters (one line would crowd an 80-column terminal)."""

            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                for task in self.tasks:
                    yield Text(task.fields["details"], style="dim")

        bar = TwoLines(
            TextColumn("episodes"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("[progress.data.speed]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            auto_refresh=False,
        )
        task = bar.add_task("episodes", total=self.total, rate="", details="")
        with bar:
            try:
                while True:
                    self._update(bar, task)
                    await anyio.sleep(REFRESH)
            finally:
                self._update(bar, task)

    def _update(self, bar: Any, task: Any) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        bar.update(task, completed=self.done, rate=f"{self.done / elapsed:,.1f} ep/s", details=self._details())
        bar.refresh()
