"""How progress bars behave when the output is a file or a pipe.

tqdm (used by transformers, datasets, TRL and gguf) redraws its bar with carriage returns; in a
log file or a pipe that is one line per update, thousands for a model conversion. tqdm reads
``TQDM_*`` environment variables as defaults when it is first imported, so this runs at process
start, before any library that uses it; the commands print their own plain progress lines.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def plain_progress_when_piped(stream: TextIO | None = None) -> bool:
    """Turn library progress bars off when `stream` (stderr) is not a terminal. True if it did."""
    stream = stream if stream is not None else sys.stderr
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        interactive = False
    if interactive:
        return False
    os.environ.setdefault("TQDM_DISABLE", "1")
    # Libraries already imported keep their bars unless told directly.
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets

        datasets.disable_progress_bars()
    return True
