"""Library messages that alarm without cause, replaced by one line of our own that says what they
cost. Nothing here imports a heavy library: the filters have to be in place before the library
is imported, since the messages come at import time.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNEL_MISSING = "Failed to load CPU gemm_4bit_forward"
BNB_KERNEL_NOTICE = (
    "bitsandbytes: the optional faster CPU 4-bit kernel (package `kernels`, a download from the "
    "Hugging Face Hub) is not installed, so its built-in one is used. Training and evaluation "
    "are not affected (they run whole batches, which de-quantize and multiply); only one-token "
    "generation steps (samples, the Playground) may be slower.")


class _BitsandbytesKernelNotice(logging.Filter):
    """bitsandbytes, on CPUs with AVX512-BF16, warns at import that the `kernels` package is
    missing, with a traceback-like message and a pip command; the record is rewritten into
    BNB_KERNEL_NOTICE, said once per process."""

    said = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(BNB_KERNEL_MISSING):
            return True
        if type(self).said:
            return False
        type(self).said = True
        record.msg, record.args = f"[{time.strftime('%H:%M:%S')}] {BNB_KERNEL_NOTICE}", ()
        return True


def explain_library_noise() -> None:
    """Install the filters (idempotent)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _BitsandbytesKernelNotice) for f in logger.filters):
        logger.addFilter(_BitsandbytesKernelNotice())


# PEFT (0.x) asks every model it wraps for `is_gradient_checkpointing`, which transformers 5
# keeps only as a deprecated alias of `is_activation_checkpointing`, with a FutureWarning each
# time: a warning about PEFT's code, printed to a user exporting or loading an adapter.
PEFT_CHECKPOINTING_ALIAS = r"`is_gradient_checkpointing` is deprecated"


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around `PeftModel(...)` / `PeftModel.from_pretrained(...)`: that one warning is not shown;
    every other warning is."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PEFT_CHECKPOINTING_ALIAS, category=FutureWarning)
        yield
