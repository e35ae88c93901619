"""``python -m engine.training RUN_DIR`` (or ``accelerate launch -m engine.training RUN_DIR``)."""

from __future__ import annotations

import sys


def _main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m engine.training RUN_DIR", file=sys.stderr)
        return 2
    from engine.console import plain_progress_when_piped

    plain_progress_when_piped()  # train.log is a file: no carriage-return bars in it
    from engine.training.runner import main

    return main(sys.argv[1])


if __name__ == "__main__":
    sys.exit(_main())
