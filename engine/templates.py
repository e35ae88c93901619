"""Prompt templates: sandboxed Jinja rendering, variable discovery, built-in and user templates.

Templates are rendered the way transformers renders chat templates: in an
``ImmutableSandboxedEnvironment`` (no attribute escapes, no mutation of the values passed in) with
``StrictUndefined``, so a misspelt variable is an error instead of an empty string, and held to a
time and a size limit (`engine.sandbox`). Every Jinja error, a limit reached included, becomes a
`TemplateError` carrying the line (and, where it can be found, the column).

Built-in templates live in ``engine/builtin_templates/*.yaml``; user templates are YAML files under
`paths.templates_dir()`, one per template, and override a built-in of the same name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine import paths, sandbox
from engine.errors import TunedeckError

DEFAULT_FIELDS = ["instruction", "prompt", "completion"]
BUILTIN_DIR = Path(__file__).parent / "builtin_templates"
# The limits every render is held to (see engine/sandbox.py); re-exported for callers.
MAX_REPEAT = sandbox.MAX_REPEAT
MAX_POWER = sandbox.MAX_POWER
MAX_OUTPUT = sandbox.MAX_OUTPUT


class TemplateError(TunedeckError):
    """A template that does not parse or render, located by line and column (1-based)."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None,
                 template: str = "", part: str = "template") -> None:
        self.message = message
        self.line = line
        self.column = column
        self.template = template
        self.part = part  # "template" or "system": which text of the template failed
        where = [f"template '{template}'" if template else "template"]
        if part != "template":
            where.append(f"{part} message")
        if line is not None:
            where.append(f"line {line}")
        if column is not None:
            where.append(f"column {column}")
        super().__init__(f"{', '.join(where)}: {message}")


@dataclass
class PromptTemplate:
    name: str
    template: str
    system: str = ""
    fields: list[str] = field(default_factory=lambda: list(DEFAULT_FIELDS))
    description: str = ""

    def variables(self) -> list[str]:
        """Variables the system message and template read, in order of first appearance."""
        found: list[str] = []
        for part, source in (("system", self.system), ("template", self.template)):
            if not source:
                continue
            names = _variables_of(source, self.name, part)
            found.extend(n for n in names if n not in found)
        return found

    def check(self) -> None:
        """Raise `TemplateError` if the system message or the template does not parse."""
        self.variables()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "system": self.system,
                "template": self.template, "fields": list(self.fields)}


# --------------------------------------------------------------------------- rendering


def _environment() -> Any:
    return sandbox.environment()


def _template_line(exc: BaseException) -> int | None:
    """The template line of a runtime error: jinja rewrites the traceback with template frames."""
    return sandbox.template_frame_line(exc)


def _column(source: str, line: int | None, message: str) -> int | None:
    """Best effort: where the name quoted in the message appears on the failing line."""
    if line is None:
        return None
    lines = source.splitlines()
    if not 1 <= line <= len(lines):
        return None
    text = lines[line - 1]
    for name in re.findall(r"'([^']+)'", message):
        found = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text)
        if found:
            return found.start() + 1
    return None


def _as_template_error(exc: BaseException, source: str, name: str, part: str) -> TemplateError:
    from jinja2 import TemplateSyntaxError
    from jinja2.exceptions import SecurityError, UndefinedError

    if isinstance(exc, sandbox.RenderTimeout):
        return TemplateError(f"stopped after {exc.seconds:g} s: the template runs too long (a "
                             "loop too large?); make it smaller", exc.line, None, name, part)
    message = str(exc).strip() or type(exc).__name__
    line = exc.lineno if isinstance(exc, TemplateSyntaxError) else _template_line(exc)
    if isinstance(exc, SecurityError):
        message = f"blocked by the sandbox: {message}"
    elif isinstance(exc, UndefinedError):
        missing = re.findall(r"^'([^']+)' is undefined$", message)
        if missing:
            message = (f"'{missing[0]}' is undefined: give it a value or declare a default "
                       f"with {{{{ {missing[0]} | default('') }}}}")
    return TemplateError(message, line, _column(source, line, str(exc)), name, part)


@lru_cache(maxsize=256)
def _compiled(source: str) -> Any:
    # Jinja does not cache `from_string`; a prompt is rendered many times per build (each shot,
    # the budget loop, the prefix probe), so the compiled form is kept. Failures are not cached.
    return _environment().from_string(source)


def _compile(source: str, name: str, part: str) -> Any:
    try:
        return _compiled(source)
    except Exception as exc:  # TemplateSyntaxError and friends
        raise _as_template_error(exc, source, name, part) from None


def _variables_of(source: str, name: str, part: str) -> list[str]:
    from jinja2 import meta

    env = _environment()
    try:
        ast = env.parse(source)
    except Exception as exc:
        raise _as_template_error(exc, source, name, part) from None
    names = meta.find_undeclared_variables(ast)
    # jinja2.meta returns a set; order by first mention so forms list fields as written.
    order = {n: (m.start() if (m := re.search(rf"\b{re.escape(n)}\b", source)) else 0)
             for n in names}
    return sorted(names, key=lambda n: (order[n], n))


def render_source(source: str, values: dict[str, Any], name: str = "",
                  part: str = "template") -> str:
    """Render one Jinja text in the sandbox; every failure is a `TemplateError`."""
    compiled = _compile(source, name, part)
    try:
        return sandbox.render_bounded(compiled, values)
    except TemplateError:
        raise
    except (Exception, sandbox.RenderTimeout) as exc:
        raise _as_template_error(exc, source, name, part) from None


def render_text(template: PromptTemplate, values: dict[str, Any]) -> str:
    """The template rendered with `values` (the user turn, or the raw prompt body)."""
    return render_source(template.template, values, template.name, "template")


def render_system(template: PromptTemplate, values: dict[str, Any]) -> str:
    """The template's system message rendered with `values` ("" when it has none)."""
    if not template.system.strip():
        return ""
    return render_source(template.system, values, template.name, "system").strip()


# --------------------------------------------------------------------------- files


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name.strip()).strip("-.").lower()
    return slug or "template"


def template_from_dict(data: Any, origin: str) -> PromptTemplate:
    """Validate a parsed YAML mapping; errors name the file and the field."""
    if not isinstance(data, dict):
        raise TunedeckError(f"{origin}: a template file must be a mapping with at least "
                            "'name' and 'template' keys.")
    known = {"name", "template", "system", "fields", "description"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise TunedeckError(f"{origin}: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(known))}.")
    for key in ("name", "template"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise TunedeckError(f"{origin}: field '{key}' is missing or empty; it must be text.")
    for key in ("system", "description"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise TunedeckError(f"{origin}: field '{key}' must be text.")
    fields = data.get("fields", list(DEFAULT_FIELDS))
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise TunedeckError(f"{origin}: field 'fields' must be a list of names, "
                            "e.g. [instruction, prompt, completion].")
    template = PromptTemplate(name=data["name"].strip(), template=data["template"],
                              system=data.get("system") or "", fields=list(fields),
                              description=(data.get("description") or "").strip())
    try:
        template.check()
    except TemplateError as err:
        raise TemplateError(f"{err.message} (in {origin})", err.line, err.column,
                            template.name, err.part) from None
    return template


def load_template_file(path: Path) -> PromptTemplate:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise TunedeckError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise TunedeckError(f"{path}{where}: invalid YAML: {problem}") from None
    return template_from_dict(data, str(path))


def builtin_templates() -> list[PromptTemplate]:
    """The shipped templates: one per sample dataset and a generic instruction one."""
    return [load_template_file(p) for p in sorted(BUILTIN_DIR.glob("*.yaml"))]


def load_templates(errors: list[TunedeckError] | None = None) -> list[PromptTemplate]:
    """Built-ins, then user templates (a user template replaces a built-in of the same name).

    A broken user file raises, unless `errors` is given: then it is appended there (for a UI that
    shows the problem next to the list) and the other templates still load.
    """
    by_name: dict[str, PromptTemplate] = {t.name: t for t in builtin_templates()}
    folder = paths.templates_dir()
    if folder.is_dir():
        for path in sorted(folder.glob("*.y*ml")):
            try:
                template = load_template_file(path)
            except TunedeckError as err:
                if errors is None:
                    raise
                errors.append(err)
                continue
            by_name[template.name] = template
    return list(by_name.values())


@lru_cache(maxsize=1)
def _builtin_names() -> frozenset[str]:
    # The shipped files do not change while the process runs; a UI asks on every list refresh.
    return frozenset(t.name for t in builtin_templates())


def is_builtin(name: str) -> bool:
    return name in _builtin_names()


def get_template(name: str) -> PromptTemplate:
    """A template by name, or from a YAML file path."""
    for template in load_templates():
        if template.name == name:
            return template
    path = Path(name).expanduser()
    if name.endswith((".yaml", ".yml")) and path.is_file():
        return load_template_file(path)
    names = ", ".join(t.name for t in load_templates())
    raise TunedeckError(f"No template named '{name}'. Available: {names}; or give a .yaml file.")


def _block_dumper() -> Any:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:
        # Multi-line templates stay readable (and editable by hand) as YAML block scalars.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def template_to_yaml(t: PromptTemplate) -> str:
    """The YAML text of a template, as saved (what the history stores with each try)."""
    import yaml

    return yaml.dump(t.as_dict(), Dumper=_block_dumper(), sort_keys=False, allow_unicode=True,
                     width=100)


def save_template(t: PromptTemplate) -> Path:
    """Write a user template as YAML under the data home (atomically) and return its path."""
    if not t.name.strip():
        raise TunedeckError("A template needs a name.")
    t.check()
    from engine.safe_write import output_file

    path = paths.templates_dir() / f"{_slug(t.name)}.yaml"
    text = template_to_yaml(t)
    with output_file(path) as fh:  # saving a template replaces its earlier version by design
        fh.write(text)
    return path
