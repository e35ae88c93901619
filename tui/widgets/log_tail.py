"""The tail of a growing log file (train.log), followed and wrapped to the pane's width."""

from __future__ import annotations

import textwrap
from collections import deque
from pathlib import Path

from textual.events import Resize
from textual.widgets import Log

LOG_TAIL_BYTES = 64 * 1024


class LogTail(Log):
    """The end of train.log, followed as it grows (a partial last line waits for its newline).

    Lines are wrapped to the pane's width (re-wrapped when it changes), so a narrow pane cuts
    nothing. It keeps to the end of the file unless the user has moved up in it with the
    keys: `Log`'s own auto-scroll only follows when the view was at the end, which it is not
    when the first lines arrive before the pane has its size.
    """

    DEFAULT_CSS = """
    LogTail { height: 1fr; }
    """
    KEEP_LINES = 500

    def __init__(self, path: Path, *, id: str | None = None) -> None:
        super().__init__(max_lines=4 * self.KEEP_LINES, auto_scroll=False, id=id)
        self.path = path
        self._offset: int | None = None
        self._partial = b""
        self._raw: deque[str] = deque(maxlen=self.KEEP_LINES)  # unwrapped, for a re-wrap
        self._wrapped_at = 0

    def poll(self) -> bool:
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        skip_first = False
        if self._offset is None or size < self._offset:
            self._offset = max(size - LOG_TAIL_BYTES, 0)
            skip_first = self._offset > 0
            self._partial = b""
        if size == self._offset:
            return False
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read(size - self._offset)
        except OSError:  # rotated or removed under us: try again on the next tick
            return False
        self._offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self._partial = data
            return False
        self._partial = data[cut + 1:]
        lines = data[:cut].decode("utf-8", "replace").split("\n")
        if skip_first:
            lines = lines[1:]
        # Progress bars redraw with \r: only the last state of a line is worth showing.
        lines = [line.rsplit("\r", 1)[-1] for line in lines]
        self._raw.extend(lines)
        self._show(lines)
        return True

    @property
    def wrap_width(self) -> int:
        """Columns a line may take: the pane less its vertical scrollbar (0 before layout)."""
        width = self.size.width - self.styles.scrollbar_size_vertical
        return width if width >= 10 else 0

    @property
    def following(self) -> bool:
        return not self.has_focus or self.is_vertical_scroll_end or self.max_scroll_y == 0

    def _show(self, lines: list[str]) -> None:
        follow = self.following
        width = self._wrapped_at = self.wrap_width
        self.write_lines((piece for line in lines for piece in wrap_line(line, width)),
                         scroll_end=False)
        if follow:
            self.call_after_refresh(self.scroll_end, animate=False)

    def on_resize(self, event: Resize) -> None:
        if self.wrap_width != self._wrapped_at:
            self.clear()
            self._show(list(self._raw))


def wrap_line(line: str, width: int) -> list[str]:
    """`line` in pieces of at most `width` columns, continuations indented; as is if width 0."""
    if not width or len(line) <= width:
        return [line]
    return textwrap.wrap(line, width, subsequent_indent="  ", drop_whitespace=False,
                         replace_whitespace=False) or [line]
