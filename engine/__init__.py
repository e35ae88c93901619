"""tunedeck's engine: everything that is not presentation.

Nothing here imports textual or rich, and heavy libraries (torch, transformers, peft, datasets,
bitsandbytes) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
