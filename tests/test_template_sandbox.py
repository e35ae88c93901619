"""The bounded template sandbox: hostile templates fail fast with a clear error and a line.

The hostile templates run in one child process under a memory limit (RLIMIT_AS) and a timeout, so
a guard that stops working shows up as a failed test, not as a machine out of memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from engine import sandbox
from engine.templates import TemplateError, render_source

# name → (template, words the error must contain, the line it names or None)
HOSTILE = {
    "nested range": ("{% for i in range(100000) %}\n{% for j in range(100000) %}{% endfor %}"
                     "{% endfor %}", "runs too long", 2),
    "power tower": ("{{ ((10**9999)**9999) }}", "bits", 1),
    "power of a big base": ("{% set x = 10**9999 %}\n{{ x ** 9999 }}", "bits", 2),
    "squaring in a loop": ("{% set ns = namespace(x=10) %}{% for i in range(40) %}"
                           "{% set ns.x = ns.x * ns.x %}{% endfor %}", "bits", 1),
    "center method": ("{{ 'x'.center(10**9) }}", "center()", 1),
    "center filter": ("{{ 'x'|center(10**9) }}", "'center' filter", 1),
    "center by item": ("{{ 'x'['center'](10**9) }}", "center()", 1),
    "ljust": ("\n\n{{ 'x'.ljust(2000000000) }}", "ljust()", 3),
    "zfill": ("{{ '1'.zfill(10**9) }}", "zfill()", 1),
    "indent filter": ("{{ ('a\\n' * 50000)|indent(100000) }}", "'indent' filter", 1),
    "percent width": ("{{ '%999999999d' % 1 }}", "width 999,999,999", 1),
    "percent star": ("{{ '%*d' % (999999999, 1) }}", "width 999,999,999", 1),
    "format width": ("{{ '{:999999999}'.format(1) }}", "width 999,999,999", 1),
    "format nested width": ("{{ '{:{}}'.format(1, 999999999) }}", "width 999,999,999", 1),
    "format filter": ("{{ '%999999999d'|format(1) }}", "width 999,999,999", 1),
    "join filter": ("{% set big = 'x' * 100000 %}{{ [big, big, big, big, big, big, big, big, "
                    "big, big, big]|join }}", "'join' filter", 1),
    "join method": ("{% set big = 'x' * 100000 %}{{ ''.join([big, big, big, big, big, big, big, "
                    "big, big, big, big]) }}", "join()", 1),
    "repeated list": ("{{ (['x' * 100000] * 100000)|join }}", "over the limit", 1),
    "replace method": ("{{ ('x' * 100000).replace('x', 'y' * 100000) }}", "replace()", 1),
    "replace filter": ("{{ ('x' * 100000)|replace('x', 'y' * 100000) }}", "'replace' filter", 1),
    "translate": ("{{ ('x' * 100000).translate({120: 'y' * 100000}) }}", "translate()", 1),
    "expandtabs": ("{{ ('\\t' * 100000).expandtabs(100000) }}", "expandtabs()", 1),
    "doubling with ~": ("{% set ns = namespace(s='x' * 100000) %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "'~'", 1),
    "doubling with +": ("{% set ns = namespace(s='x' * 100000) %}{% for i in range(40) %}"
                        "{% set ns.s = ns.s + ns.s %}{% endfor %}", "the sum", 1),
    "doubling in a block": ("{% set ns = namespace(s='x' * 100000) %}{% for i in range(40) %}"
                            "{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}",
                            "printed value", 1),
    "printing a list": ("{% set big = 'x' * 100000 %}{{ [big, big, big, big, big, big, big, big, "
                        "big, big, big] }}", "printed value", 1),
    "tojson of a list": ("{% set big = 'x' * 100000 %}{{ [big, big, big, big, big, big, big, "
                         "big, big, big, big]|tojson }}", "'tojson' filter", 1),
    "sum of lists": ("{% set x = [1] * 100000 %}{{ [x, x, x, x]|sum(start=[]) }}",
                     "'sum' filter", 1),
    "batch fill": ("{{ [1]|batch(10**9, 0)|list }}", "linecount", 1),
    "slice": ("{{ [1]|slice(10**9)|list }}", "slices", 1),
    "long output": ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "rendered text",
                    None),
    "lipsum": ("{{ lipsum(1, min=10**9, max=10**9 + 1) }}", "'lipsum' is undefined", 1),
}


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory) -> dict:
    """Every hostile template rendered in one child process with 1.5 GB of address space."""
    cases = tmp_path_factory.mktemp("sandbox") / "cases.json"
    cases.write_text(json.dumps({k: v[0] for k, v in HOSTILE.items()}))
    script = textwrap.dedent(f"""
        import json, resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
        from engine import sandbox
        from engine.templates import TemplateError, render_source
        sandbox.RENDER_SECONDS = 1.0
        out = {{}}
        for name, source in json.load(open({str(cases)!r})).items():
            start = time.monotonic()
            try:
                render_source(source, {{}}, "hostile")
                out[name] = ["rendered", None, 0.0]
            except TemplateError as err:
                out[name] = [str(err), err.line, time.monotonic() - start]
            except BaseException as err:
                out[name] = [f"RAW {{type(err).__name__}}: {{err}}", None, 0.0]
        print(json.dumps(out))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_template_fails_fast_with_a_clear_error(hostile_results, name):
    _, words, line = HOSTILE[name]
    message, got_line, seconds = hostile_results[name]
    assert message.startswith("template 'hostile'"), message
    assert words in message, message
    assert got_line == line, message
    # The time limit is 1 s in the child; everything else is refused before it runs.
    assert seconds < 8, (name, seconds)


def test_the_time_limit_stops_a_render_in_a_worker_thread(monkeypatch):
    monkeypatch.setattr(sandbox, "RENDER_SECONDS", 0.3)
    caught: list[BaseException] = []

    def render() -> None:
        try:
            render_source("{% for i in range(100000) %}{% for j in range(100000) %}"
                          "{% endfor %}{% endfor %}", {}, "slow")
        except TemplateError as err:
            caught.append(err)

    worker = threading.Thread(target=render)
    start = time.monotonic()
    worker.start()
    worker.join(30)
    assert not worker.is_alive()
    assert time.monotonic() - start < 20
    assert len(caught) == 1 and "stopped after 0.3 s" in str(caught[0])


def test_a_deadline_that_passes_as_a_render_ends_never_fires_later():
    """Renders racing their deadline either finish or time out; the exception never lands in
    the code that runs after the render."""
    compiled = sandbox.environment().from_string("{% for i in range(200) %}{{ i }}{% endfor %}")
    outcomes = set()
    for _ in range(300):
        try:
            text = sandbox.render_bounded(compiled, {}, 0.0005)
            outcomes.add("rendered" if text.startswith("0123") else "wrong")
        except sandbox.RenderTimeout:
            outcomes.add("timeout")
    time.sleep(0.05)
    total = sum(range(10_000))  # a stray RenderTimeout would be raised around here
    assert total == 49_995_000
    assert outcomes <= {"rendered", "timeout"}


def test_ordinary_templates_still_render():
    source = ("Q: {{ q }}\n{% for i in range(3) %}{{ i }}{% endfor %} {{ 'x'|center(5) }}|"
              "{{ '%3d' % 7 }}|{{ '{:>3}'.format(1) }}|{{ ['a', 'b']|join(',') }}|{{ 2 ** 10 }}|"
              "{{ 'ab'|replace('a', 'c') }}|{{ [1, 2, 3]|sum }}|{{ {'k': 1}|tojson }}|"
              "{{ [1, 2, 3]|batch(2, 0)|list }}|{{ 'a\\nb'|indent(2) }}|{{ 'x' ~ 'y' }}|"
              "{{ 'x' * 3 }}|{{ [1] + [2] }}")
    assert render_source(source, {"q": "why?"}) == (
        "Q: why?\n012   x  |  7|  1|a,b|1024|cb|6|{\"k\": 1}|[[1, 2], [3, 0]]|a\n  b|xy|xxx|"
        "[1, 2]")


def test_a_value_just_under_the_limit_renders():
    text = render_source("{{ 'x' * 100000 }}{{ v }}", {"v": "y" * (sandbox.MAX_OUTPUT - 100_000)})
    assert len(text) == sandbox.MAX_OUTPUT
    with pytest.raises(TemplateError, match="rendered text"):
        render_source("{{ 'x' * 100000 }}{{ v }}!", {"v": "y" * (sandbox.MAX_OUTPUT - 100_000)})


def test_estimate_size_walks_shared_references_once():
    big = "x" * 1000
    assert sandbox.estimate_size([big] * 10) >= 10_000
    start = time.monotonic()
    assert sandbox.estimate_size([[1] * 100_000] * 100_000) > sandbox.MAX_OUTPUT
    assert time.monotonic() - start < 5
