"""The Playground's settings kept across restarts: template, strategy, sampling parameters,
dataset path, the strategies ticked for compare and the open tab.

One small JSON file in the data home (``playground.json``), written whole and renamed into place
so a crash never leaves half a file. A file that cannot be read is reported, not raised, and the
Playground starts from its defaults.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from engine import paths

FILE_NAME = "playground.json"
KEYS = ("template", "strategy", "params", "data_path", "compare", "tab")


def settings_path() -> Path:
    return paths.home() / FILE_NAME


def load() -> tuple[dict[str, Any], str]:
    """The saved settings and a problem message ("" when none). A missing file is no problem."""
    path = settings_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, ""
    except OSError as err:
        return {}, f"tunedeck: {path}: cannot be read ({err.strerror}); the defaults are used."
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        return {}, (f"tunedeck: {path}, line {err.lineno}: not valid JSON ({err.msg}); the "
                    "defaults are used. Delete the file to start afresh.")
    if not isinstance(data, dict):
        return {}, (f"tunedeck: {path}: expected a JSON object of settings; the defaults are "
                    "used. Delete the file to start afresh.")
    return {k: data[k] for k in KEYS if k in data}, ""


def save(settings: dict[str, Any]) -> None:
    """Write the settings atomically (temp file, then rename). Raises OSError."""
    path = settings_path()
    paths.ensure_dir(path.parent)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({k: settings[k] for k in KEYS if k in settings}, indent=1),
                   encoding="utf-8")
    os.replace(tmp, path)


def collect(screen: Any) -> dict[str, Any]:
    """What the Playground shows now, as saved settings (unreadable numbers are kept as typed)."""
    from textual.widgets import Input, Select, TabbedContent

    def text(widget_id: str) -> str:
        return screen.query_one(widget_id, Input).value

    template = screen.query_one("#template-select", Select).value
    return {
        "template": template if isinstance(template, str) else None,
        "strategy": {"kind": str(screen.query_one("#strategy-kind", Select).value),
                     "selection": str(screen.query_one("#strategy-selection", Select).value),
                     "k": text("#strategy-k"), "samples": text("#strategy-samples"),
                     "cot_trigger": text("#strategy-trigger")},
        "params": {"temperature": text("#param-temperature"), "top_p": text("#param-top-p"),
                   "top_k": text("#param-top-k"), "max_new_tokens": text("#param-max-new"),
                   "repetition_penalty": text("#param-rep"), "seed": text("#param-seed"),
                   "stop": text("#param-stop")},
        "data_path": text("#data-path").strip(),
        "compare": screen.compare_kinds(),
        "tab": screen.query_one("#pg-tabs", TabbedContent).active,
    }


def apply(screen: Any, settings: dict[str, Any]) -> None:
    """Put saved settings back into the Playground's widgets (what no longer exists is skipped:
    a template deleted since, a strategy this version does not know)."""
    from textual.widgets import Input, Select, SelectionList, TabbedContent

    template = settings.get("template")
    if isinstance(template, str) and template in screen._templates:
        screen.query_one("#template-select", Select).value = template
    strategy = settings.get("strategy") if isinstance(settings.get("strategy"), dict) else {}
    params = dict(settings.get("params") or {}) if isinstance(settings.get("params"), dict) else {}
    stop = params.pop("stop", None)
    screen.set_settings(strategy, params)
    if isinstance(stop, str):
        screen.query_one("#param-stop", Input).value = stop
    compare = settings.get("compare")
    if isinstance(compare, list):
        kinds = screen.query_one("#compare-kinds", SelectionList)
        known = {kinds.get_option_at_index(i).value for i in range(kinds.option_count)}
        kinds.deselect_all()
        for kind in compare:
            if kind in known:
                kinds.select(kind)
    data_path = settings.get("data_path")
    if isinstance(data_path, str) and data_path:
        field = screen.query_one("#data-path", Input)
        if field.value != data_path:
            field.value = data_path
            screen._load_data(data_path)
    tab = settings.get("tab")
    tabs = screen.query_one("#pg-tabs", TabbedContent)
    if isinstance(tab, str) and tabs.query(f"TabPane#{tab}"):
        tabs.active = tab
