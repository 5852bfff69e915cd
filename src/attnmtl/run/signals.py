"""Stopping a training loop cleanly on SIGINT and SIGTERM.

The loop asks :class:`StopRequests` between steps, so a step, an evaluation or a checkpoint is
never cut in half; it then writes ``last`` and raises :class:`TrainingInterrupted`.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT or SIGTERM at a step boundary, after writing ``last``.

    ``exit_code`` is 128 + the signal's number (130 for SIGINT, 143 for SIGTERM), as a shell
    reports a process the signal ended; the command line prints ``format_message()`` and exits
    with it (as it does for click's exceptions).
    """

    def __init__(self, signum: int, step: int, run_dir: Path | None) -> None:
        self.signum, self.step, self.run_dir = signum, step, run_dir
        self.exit_code = 128 + signum
        hint = f"; resume with attnmtl train --resume {run_dir}" if run_dir is not None else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}{hint}")

    def format_message(self) -> str:
        """The one line the command line prints."""
        return str(self)


class StopRequests:
    """While entered, SIGINT and SIGTERM only ask the training loop to stop (``signum``).

    The loop looks at ``signum`` between steps, so a step, an evaluation or a checkpoint is
    never cut in half. A second signal does what the signal did before (Ctrl-C twice: a
    KeyboardInterrupt at once). Handlers are installed only in the main thread (Python allows
    no other), never over an ignored signal (a shell's background job ignores SIGINT), and the
    previous ones are restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:
                    self.previous[signum] = signal.signal(signum, self.request)
        return self

    def request(self, signum: int, frame: Any) -> None:
        """The handler: remember the first signal; a second one is handled as before."""
        if self.signum is None:
            self.signum = signum
            return
        signal.signal(signum, self.restored(signum))
        signal.raise_signal(signum)

    def restored(self, signum: int) -> Any:
        """The handler that was installed before (the default one if it was not Python's)."""
        previous = self.previous.get(signum)
        return signal.SIG_DFL if previous is None else previous

    def __exit__(self, *exc: object) -> None:
        for signum in self.previous:
            signal.signal(signum, self.restored(signum))
        self.previous = {}
