"""The bounded Jinja sandbox every prompt template renders in.

Jinja's `ImmutableSandboxedEnvironment` stops attribute escapes and mutation, but not a template
that runs for hours or allocates gigabytes. Two limits bound every render, in any thread:

- size: no single value and no rendered text may pass `MAX_OUTPUT` characters. The operations
  that can make something big in one C call (``*``, ``**``, ``+``, ``~``, ``%``, ``center``,
  ``ljust``, ``indent``, ``join``, ``replace``, ``sum``, ``batch``, format widths, printing a list
  that holds one big string many times) are estimated *before* they run, because a C call cannot
  be interrupted once it allocates;
- time: a watchdog thread stops a render after `RENDER_SECONDS` of its CPU time by raising
  `RenderTimeout` in the rendering thread, whichever thread that is.
  Everything left that is slow is a Python loop (nested ``range``), which that exception
  interrupts.

Violations raise `SecurityError` (the message says what and the limit); the caller turns them into
a `TemplateError` with the template line.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import re
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

JINJA_FILENAME = "<template>"
MAX_OUTPUT = 1_000_000  # characters of rendered text, and of any one value made on the way
MAX_REPEAT = 100_000  # 'x' * n and [..] * n
MAX_POWER = 10_000  # the exponent of **
MAX_INT_BITS = 100_000  # ~30,000 digits: beyond that int arithmetic is the slow part
RENDER_SECONDS = 2.0  # CPU seconds of the rendering thread (wall-clock backstop: 5x)


class RenderTimeout(BaseException):
    """Raised in a render past its time; a BaseException, so no `except Exception` inside Jinja
    swallows it."""

    def __init__(self, seconds: float = RENDER_SECONDS, line: int | None = None) -> None:
        super().__init__(seconds, line)
        self.seconds, self.line = seconds, line


def _security_error(message: str) -> Exception:
    from jinja2.exceptions import SecurityError

    return SecurityError(message)


def _too_big(what: str, size: int) -> Exception:
    return _security_error(f"{what} would be {size:,} characters, over the limit of "
                           f"{MAX_OUTPUT:,}")


# --------------------------------------------------------------------------- size estimates


MAX_DEPTH = 200  # nesting of lists and dicts that printing (repr) walks


def estimate_size(value: Any, limit: int = MAX_OUTPUT) -> int:
    """About how many characters `str(value)` has, walking containers. It stops counting once
    past `limit`, and sizes each container once: a list holding one big list a million times
    costs a few steps, not a million walks of it."""
    memo: dict[int, int] = {}

    def size(item: Any, depth: int) -> int:
        if isinstance(item, (str, bytes)):
            return len(item)
        if isinstance(item, bool) or item is None:
            return 5
        if isinstance(item, int):
            return item.bit_length() * 30103 // 100_000 + 2
        if isinstance(item, float):
            return 24
        if not isinstance(item, (dict, list, tuple, set, frozenset)):
            return 16
        known = memo.get(id(item))
        if known is not None:
            return known
        if depth > MAX_DEPTH:
            raise _security_error(f"values nested more than {MAX_DEPTH} deep are not allowed")
        parts = (*item.keys(), *item.values()) if isinstance(item, dict) else item
        total = 2
        for part in parts:
            # Text and small numbers inline: a call per element is what would make this slow.
            if isinstance(part, str):
                total += 4 + len(part)
            elif type(part) is int and -10**15 < part < 10**15:
                total += 3 + part.bit_length() * 30103 // 100_000
            else:
                total += 2 + size(part, depth + 1)
            if total > limit:
                break
        memo[id(item)] = total
        return total

    return size(value, 0)


def check_size(value: Any, what: str = "a value") -> Any:
    size = estimate_size(value)
    if size > MAX_OUTPUT:
        raise _too_big(what, size)
    return value


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# --------------------------------------------------------------------------- operators


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int) and \
                    len(seq) * n > MAX_REPEAT:
                raise _security_error(f"repetition longer than {MAX_REPEAT:,} is not allowed")
        if isinstance(left, int) and isinstance(right, int) and \
                left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise _security_error(f"a product of more than {MAX_INT_BITS:,} bits is not allowed")
    elif operator == "**":
        if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
            raise _security_error(f"exponent larger than {MAX_POWER:,} is not allowed")
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1 and \
                left.bit_length() * right > MAX_INT_BITS:
            raise _security_error(f"a power of more than {MAX_INT_BITS:,} bits is not allowed")
    elif operator == "+":
        if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, type(left)):
            size = estimate_size(left) + estimate_size(right)
            if size > MAX_OUTPUT:
                raise _too_big("the sum", size)
    elif operator == "%" and isinstance(left, str):
        _check_percent(left, right)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")
_BRACE_FIELD = re.compile(r"\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}")


def _check_widths(widths: list[str], star: bool, args: Any, what: str) -> None:
    for width in widths:
        if width.isdigit() and int(width) > MAX_OUTPUT:
            raise _security_error(f"{what}: width {int(width):,} is over the limit of "
                                  f"{MAX_OUTPUT:,}")
    if star:
        values = args.values() if isinstance(args, dict) else \
            args if isinstance(args, (list, tuple)) else (args,)
        for value in values:
            if _as_int(value) > MAX_OUTPUT:
                raise _security_error(f"{what}: width {value:,} is over the limit of "
                                      f"{MAX_OUTPUT:,}")
    size = estimate_size(args)
    if size > MAX_OUTPUT:
        raise _too_big(what, size)


def _check_percent(fmt: str, args: Any) -> None:
    widths: list[str] = []
    for match in _PERCENT.finditer(fmt):
        widths += [w for w in match.groups() if w]
    _check_widths(widths, "*" in widths, args, "'%' formatting")


def _check_brace_format(fmt: str, args: tuple, kwargs: dict) -> None:
    widths: list[str] = []
    nested = False
    for match in _BRACE_FIELD.finditer(fmt):
        _, _, spec = match.group(1).partition(":")
        widths += re.findall(r"\d+", spec)
        nested = nested or "{" in spec
    _check_widths(widths, nested, [*args, *kwargs.values()], "format()")


# --------------------------------------------------------------------------- str/bytes methods


def _pad_width(name: str, s: Any, args: tuple, kwargs: dict) -> int:
    if name == "expandtabs":
        tab = _as_int(args[0] if args else kwargs.get("tabsize", 8))
        return len(s) + s.count("\t" if isinstance(s, str) else b"\t") * tab
    return max(len(s), _as_int(args[0] if args else kwargs.get("width", 0)))


def _replace_size(s: Any, old: Any, new: Any, count: Any) -> int:
    if not isinstance(old, type(s)) or not isinstance(new, type(s)) or len(new) <= len(old):
        return len(s)
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


def _join_size(sep: Any, items: list) -> int:
    return estimate_size(items) + len(sep) * max(0, len(items) - 1)


def _guard_method(owner: Any, name: str, method: Callable) -> Callable:
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name in ("center", "ljust", "rjust", "zfill", "expandtabs"):
            size = _pad_width(name, owner, args, kwargs)
        elif name == "replace":
            size = _replace_size(owner, *(list(args) + [None, None, None])[:3])
        elif name == "join":
            items = list(args[0]) if args else []
            size = _join_size(owner, items)
            args = (items,)
        elif name == "translate":
            table = args[0] if args else None
            longest = max((len(v) for v in table.values() if isinstance(v, (str, bytes))),
                          default=1) if isinstance(table, dict) else 1
            size = len(owner) * max(1, longest)
        else:  # format, format_map
            mapping = args[0] if name == "format_map" and args else {}
            _check_brace_format(owner, args if name == "format" else (),
                                dict(mapping) if isinstance(mapping, dict) else kwargs)
            size = 0
        if size > MAX_OUTPUT:
            raise _too_big(f"{name}()", size)
        return check_size(method(*args, **kwargs), f"the result of {name}()")

    return guarded


_GUARDED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs", "replace",
                              "join", "translate", "format", "format_map"})


# --------------------------------------------------------------------------- filters


_CONTEXT_PARAMS = ("eval_ctx", "environment", "context")


def _guard_filter(original: Callable, check: Callable[[dict], int]) -> Callable:
    signature = inspect.signature(original)
    # Jinja's sync/async filters take the eval context their signature does not name.
    first = next(iter(signature.parameters), "")
    extra = int(getattr(original, "jinja_pass_arg", None) is not None
                and first not in _CONTEXT_PARAMS)
    label = getattr(original, "__name__", "filter").removeprefix("sync_").removeprefix("do_")

    @functools.wraps(original)  # keeps jinja_pass_arg, so Jinja passes the context as before
    def guarded(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args[extra:], **kwargs)
        bound.apply_defaults()
        size = check(bound.arguments)
        if size > MAX_OUTPUT:
            raise _too_big(f"the '{label}' filter's result", size)
        return check_size(original(*args[:extra], *bound.args, **bound.kwargs),
                          f"the '{label}' filter's result")

    return guarded


def _materialize(arguments: dict, name: str) -> list:
    value = arguments[name]
    if not isinstance(value, (list, tuple, str, dict)):
        value = list(value)
        arguments[name] = value
    return list(value)


def _indent_size(a: dict) -> int:
    width = a["width"]
    per_line = len(width) if isinstance(width, str) else _as_int(width)
    s = str(a["s"])
    return len(s) + (s.count("\n") + 1) * per_line


def _repeat_check(count_name: str, fill_name: str) -> Callable[[dict], int]:
    def check(a: dict) -> int:
        count = _as_int(a[count_name])
        if count > MAX_REPEAT and (a.get(fill_name) is not None or count_name == "slices"):
            raise _security_error(f"{count_name} larger than {MAX_REPEAT:,} is not allowed")
        return 0

    return check


def _percent_filter(a: dict) -> int:
    _check_percent(str(a["value"]), a["kwargs"] or a["args"])
    return 0


def _sum_size(a: dict) -> int:
    items = _materialize(a, "iterable")
    if isinstance(a["start"], (int, float)) and all(isinstance(i, (int, float)) for i in items):
        return 0
    return estimate_size([a["start"], *items])


_FILTER_CHECKS: dict[str, Callable[[dict], int]] = {
    "center": lambda a: max(len(str(a["value"])), _as_int(a["width"])),
    "indent": _indent_size,
    "format": _percent_filter,
    "join": lambda a: _join_size(str(a["d"]), _materialize(a, "value")),
    "replace": lambda a: _replace_size(str(a["s"]), a["old"], a["new"], a["count"]),
    "sum": _sum_size,
    "batch": _repeat_check("linecount", "fill_with"),
    "slice": _repeat_check("slices", "fill_with"),
}
# Filters that print a whole structure: refused before they build a too long text.
_PRINTING_FILTERS = ("string", "pprint", "tojson", "e", "escape", "forceescape", "urlencode",
                     "xmlattr", "list")


# --------------------------------------------------------------------------- time limit


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule `exc` in another thread (None: cancel a scheduled one). CPython delivers it at
    the thread's next bytecode boundary, the way Ctrl+C reaches the main thread."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else None)


class _Watchdog:
    """One daemon thread that raises `RenderTimeout` in a render that passes its time.

    The time is the rendering thread's own CPU time (so a render on a machine busy with training
    is not cut short for waiting its turn), with a wall-clock backstop of `WALL_FACTOR` times it.
    A tracer (`sys.settrace`) would work per thread too, but slows every render about 2x and
    displaces a debugger's or coverage's tracer; a signal timer only works on the main thread.
    """

    WALL_FACTOR = 5

    def __init__(self) -> None:
        self._wake = threading.Condition()
        # token → [next look (monotonic), thread id, its CPU clock, CPU at start, limit, backstop]
        self._armed: dict[int, list] = {}
        self._fired: set[int] = set()
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> int:
        ident = threading.get_ident()
        # Where a thread's CPU clock cannot be read (not Linux), the limit is wall time.
        getcpuclockid = getattr(time, "pthread_getcpuclockid", None)
        clock = getcpuclockid(ident) if getcpuclockid is not None else None
        now = time.monotonic()
        with self._wake:
            token = next(self._tokens)
            self._armed[token] = [now + seconds, ident, clock, _cpu(clock, now), seconds,
                                  now + seconds * self.WALL_FACTOR]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="template-watchdog",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()
            return token

    def disarm(self, token: int) -> bool:
        """Stop watching; True when the time had run out (its exception is then cancelled if it
        has not arrived yet, so it can never land in the code after the render)."""
        with self._wake:
            self._armed.pop(token, None)
            if token not in self._fired:
                return False
            self._fired.discard(token)
            _raise_in(threading.get_ident(), None)
            return True

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for token, entry in list(self._armed.items()):
                    look, ident, clock, start, limit, backstop = entry
                    if look > now:
                        continue
                    try:
                        used = _cpu(clock, now) - start
                    except OSError:  # the thread is gone: nothing left to stop
                        del self._armed[token]
                        continue
                    if used >= limit or now >= backstop:
                        del self._armed[token]
                        self._fired.add(token)
                        _raise_in(ident, RenderTimeout)
                    else:  # it waited for the CPU: look again when it could have used it all
                        entry[0] = now + max(0.01, limit - used)
                nearest = min((e[0] for e in self._armed.values()), default=None)
                self._wake.wait(None if nearest is None else max(0.0, nearest - now))


def _cpu(clock: int | None, now: float) -> float:
    return time.clock_gettime(clock) if clock is not None else now


_WATCHDOG = _Watchdog()


def template_frame_line(exc: BaseException) -> int | None:
    """The line of the innermost frame of template code in `exc`'s traceback (jinja rewrites
    the traceback with template frames), or None."""
    lineno = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == JINJA_FILENAME:
            lineno = tb.tb_lineno
        tb = tb.tb_next
    return lineno


def _timeout_line(exc: BaseException, compiled: Any) -> int | None:
    """The template line a timed-out render was on: its innermost frame of template code."""
    lineno = template_frame_line(exc)
    try:
        return compiled.get_corresponding_lineno(lineno) if lineno is not None else None
    except Exception:
        return None


def render_bounded(compiled: Any, values: dict[str, Any], seconds: float | None = None) -> str:
    """Render a template compiled by `environment()` within the time and size limits."""
    limit = RENDER_SECONDS if seconds is None else seconds
    parts: list[str] = []
    size = 0
    token = _WATCHDOG.arm(limit)
    try:
        try:
            for chunk in compiled.generate(**values):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise _too_big("the rendered text", size)
                parts.append(chunk)
        finally:
            _WATCHDOG.disarm(token)
    except RenderTimeout as stop:
        _WATCHDOG.disarm(token)  # when it arrived inside the first disarm
        raise RenderTimeout(limit, _timeout_line(stop, compiled)) from None
    return "".join(parts)


# --------------------------------------------------------------------------- the environment


@lru_cache(maxsize=1)
def environment() -> Any:
    from jinja2 import StrictUndefined
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _Generator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # `a ~ b` joins in one C call: route it through a size check first.
            self.write("environment.bounded_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class _Environment(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "+", "%"})
        code_generator_class = _Generator

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            _check_binop(operator, left, right)
            return check_size(super().call_binop(context, operator, left, right),
                              f"the result of '{operator}'")

        def wrap_str_format(self, value: Any) -> Any:
            # Called on every attribute and item lookup: the place to guard str/bytes methods,
            # whichever way (x.center or x['center']) the template reaches them.
            name = getattr(value, "__name__", None)
            owner = getattr(value, "__self__", None)
            if name not in _GUARDED_METHODS or not isinstance(owner, (str, bytes)):
                return None
            wrapped = super().wrap_str_format(value) or value
            return _guard_method(owner, name, wrapped)

        @staticmethod
        def bounded_concat(parts: tuple) -> str:
            size = sum(estimate_size(p) for p in parts)
            if size > MAX_OUTPUT:
                raise _too_big("the joined text ('~')", size)
            return "".join(map(str, parts))

    # Same options transformers uses for chat templates, so habits carry over.
    env = _Environment(undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                       keep_trailing_newline=False, extensions=["jinja2.ext.loopcontrols"],
                       finalize=lambda value: check_size(value, "a printed value"))
    for name, check in _FILTER_CHECKS.items():
        env.filters[name] = _guard_filter(env.filters[name], check)
    for name in _PRINTING_FILTERS:
        original = env.filters[name]
        env.filters[name] = _guard_filter(original, _printing_check(original))
    env.globals.pop("lipsum", None)  # a text generator with unbounded arguments; no prompt use
    return env


def _printing_check(original: Callable) -> Callable[[dict], int]:
    first = next(p for p in inspect.signature(original).parameters if p not in _CONTEXT_PARAMS)
    return lambda a: estimate_size(a[first])
