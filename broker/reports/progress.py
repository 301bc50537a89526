"""A rich progress display on stderr for report work that takes more than a second.

    with report_progress("aggregating 1,000,000 events") as step:
        rows = ...            # nothing is shown if all steps end within `delay_s`
        step("drawing charts")

The display (spinner, step, elapsed time) starts only once the work has run `delay_s`, and
only on a terminal (or a console forced to be one), so pipes, files and quick reports stay
silent.  It is transient: it leaves no line behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["report_progress"]


@contextmanager
def report_progress(
    description: str, *, delay_s: float = 1.0, console: Any | None = None
) -> Iterator[Callable[[str], None]]:
    """Run a block with a delayed, transient progress display; yields a function naming the current step."""
    from rich.console import Console

    out = console or Console(stderr=True)
    if not out.is_terminal:
        yield lambda _text: None
        return
    lock = threading.Lock()
    state: dict[str, Any] = {"started": False, "done": False, "text": description, "progress": None}

    def start() -> None:  # the display is built only once the work turns out slow
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with lock:
            if not state["done"]:
                progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                    console=out, transient=True)
                state["task"] = progress.add_task(state["text"], total=None)
                progress.start()
                state["progress"], state["started"] = progress, True

    def step(text: str) -> None:
        with lock:
            state["text"] = text
            if state["progress"] is not None:
                state["progress"].update(state["task"], description=text)

    timer = threading.Timer(delay_s, start)
    timer.daemon = True
    timer.start()
    try:
        yield step
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["started"]:
                state["progress"].stop()
