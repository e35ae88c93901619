"""Running the training process's main in the test's own process."""

from __future__ import annotations

import signal


def run_in_process(run) -> int:
    """`engine.training.runner.main` on a run directory, the signal handlers it installs put
    back afterwards (pytest's own would otherwise be gone)."""
    from engine.training import runner

    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return runner.main(run.path)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
