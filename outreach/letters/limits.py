"""Caps on what a letter template may cost: no render runs for minutes or takes gigabytes.

Jinja's sandbox keeps a template away from Python's internals, but not from arithmetic: ``{{ 'x' *
10**9 }}`` builds a gigabyte, two nested ``range(100000)`` loops run ten billion times. A letter is a few
thousand characters and a few hundred loop turns, so the caps below are generous for any letter and
stop a runaway template within a fraction of a second:

- the size of what an operation would build is checked *before* it is built: ``*`` and ``+`` on text
  and lists, ``**`` on numbers, the ``center``/``indent``/``replace``/``format`` filters and the text
  methods that pad or replace (``ljust``, ``replace``, ...); joined text (``~``) is checked as it grows;
- every loop turn and every call (macros included) is a step; a render may take ``MAX_STEPS`` steps
  and ``MAX_SECONDS`` of wall time (checked every 1,024 steps);
- what a template renders is at most ``MAX_LETTER_CHARS`` characters.

A cap raises ``LimitExceeded``, a Jinja ``SecurityError``: rendering reports it like any other template
error, naming the recipient, the template and its line (``outreach check`` lists each one).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.filters import do_center, do_format, do_indent, do_replace
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

MAX_LETTER_CHARS = 1_000_000  # one rendered template; a letter is about 5,000
MAX_STEPS = 200_000  # loop turns and calls in one render; a letter needs a few hundred
MAX_SECONDS = 2.0  # one render; a letter takes well under a millisecond
MAX_NUMBER_BITS = 100_000  # about 30,000 digits
_CHECK_CLOCK_EVERY = 1024

_LOOP = "__outreach_loop"
_TEXT = "__outreach_text"
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)?(?:\.(\d+))?")
_SPEC_WIDTH = re.compile(r"\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})


class LimitExceeded(SecurityError):
    """A template wanted more than a letter can need."""


class _Budget:
    __slots__ = ("deadline", "steps")

    def __init__(self) -> None:
        self.steps = 0
        self.deadline = time.monotonic() + MAX_SECONDS


_active = threading.local()


@contextmanager
def budget() -> Iterator[None]:
    """One render's allowance of steps and time (renders on other threads have their own)."""
    outer = getattr(_active, "budget", None)
    _active.budget = _Budget()
    try:
        yield
    finally:
        _active.budget = outer


def _step() -> None:
    current: _Budget | None = getattr(_active, "budget", None)
    if current is None:
        return
    current.steps += 1
    if current.steps > MAX_STEPS:
        raise LimitExceeded(
            f"the template's loops ran more than {MAX_STEPS:,} times (loop turns and macro calls "
            "together; a letter needs a few hundred): a loop that does not end?"
        )
    if current.steps % _CHECK_CLOCK_EVERY == 0 and time.monotonic() > current.deadline:
        raise LimitExceeded(f"rendering took more than {MAX_SECONDS:g} s: a loop that does not end?")


def _too_long(size: int, what: str) -> LimitExceeded:
    return LimitExceeded(
        f"{what} would make {size:,} characters, more than a letter holds ({MAX_LETTER_CHARS:,})"
    )


def check_size(text: str, what: str = "the template") -> str:
    if len(text) > MAX_LETTER_CHARS:
        raise _too_long(len(text), what)
    return text


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 24 else shown[:20] + "..."


def _loop_guard(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _step()
        yield item


def _text_guard(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_LETTER_CHARS:
        raise _too_long(len(value), "joining text with ~")
    return value


def _replace_size(text: str, old: str, new: str, count: int | None) -> int:
    found = (len(text) + 1) if old == "" else text.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


@pass_eval_context
def _checked_replace(eval_ctx: Any, s: str, old: str, new: str, count: int | None = None) -> Any:
    size = _replace_size(str(s), str(old), str(new), count)
    if size > MAX_LETTER_CHARS:
        raise _too_long(size, "the replace filter")
    return do_replace(eval_ctx, s, old, new, count)


def _checked_width(width: Any, what: str) -> None:
    if isinstance(width, int) and width > MAX_LETTER_CHARS:
        raise _too_long(width, what)


def _checked_center(value: str, width: int = 80) -> str:
    _checked_width(width, "the center filter")
    return do_center(value, width)


def _checked_indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _checked_width(width, "the indent filter")
    if isinstance(width, str) and len(width) * (str(s).count("\n") + 1) > MAX_LETTER_CHARS:
        raise _too_long(len(width) * (str(s).count("\n") + 1), "the indent filter")
    return do_indent(s, width, first, blank)


def _checked_format(value: str, *args: Any, **kwargs: Any) -> str:
    widths = sum(int(w or 0) + int(p or 0) for w, p in _FORMAT_WIDTH.findall(str(value)))
    if widths > MAX_LETTER_CHARS:
        raise _too_long(widths, "the format filter")
    for arg in args:
        _checked_width(arg, "the format filter")
    return check_size(do_format(value, *args, **kwargs), "the format filter")


class CappedEnvironment(SandboxedEnvironment):
    """Jinja's sandbox with the caps of this module."""

    intercepted_binops = frozenset({"*", "+", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals[_LOOP] = _loop_guard
        self.globals[_TEXT] = _text_guard
        self.filters.update(
            replace=_checked_replace, center=_checked_center, indent=_checked_indent, format=_checked_format
        )

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every {% for %} iterates through _loop_guard (one step per turn) and every ~ join passes
        # _text_guard: the compiled template cannot loop or grow text unseen.
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.Name(_LOOP, "load"), [loop.iter], [], None, None, lineno=loop.lineno)
        for concat in list(tree.find_all(nodes.Concat)):
            _wrap(tree, concat)
        tree.set_environment(self)  # the nodes added above, too
        return tree

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int):
                    size = len(seq) * max(times, 0)
                    if size > MAX_LETTER_CHARS:
                        unit = "characters" if isinstance(seq, str) else "items"
                        raise LimitExceeded(
                            f"{_short(left)} * {_short(right)} would make {size:,} {unit}, more than a "
                            f"letter holds ({MAX_LETTER_CHARS:,})"
                        )
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                size = len(left) + len(right)
                if size > MAX_LETTER_CHARS:
                    raise _too_long(size, "adding these two")
        elif (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > 0
            and right * math.log2(abs(left)) > MAX_NUMBER_BITS
        ):
            raise LimitExceeded(
                f"{_short(left)} ** {_short(right)} is a number of about "
                f"{int(right * math.log10(abs(left))):,} digits"
            )
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str):
            method = getattr(__obj, "__name__", "")
            if method in _PADDING_METHODS:
                for arg in (*args, *kwargs.values()):
                    _checked_width(arg, f"str.{method}")
                    if isinstance(arg, int) and arg > 0 and method == "expandtabs":
                        size = len(owner) + owner.count("\t") * arg
                        if size > MAX_LETTER_CHARS:
                            raise _too_long(size, "str.expandtabs")
            elif method == "replace" and len(args) >= 2:
                count = args[2] if len(args) > 2 else kwargs.get("count")
                size = _replace_size(owner, str(args[0]), str(args[1]), count)
                if size > MAX_LETTER_CHARS:
                    raise _too_long(size, "str.replace")
            elif method in ("format", "format_map"):
                widths = sum(int(w) for w in _SPEC_WIDTH.findall(owner))
                if widths > MAX_LETTER_CHARS:
                    raise _too_long(widths, f"str.{method}")
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_LETTER_CHARS:
            raise _too_long(len(result), "a call")
        return result


def _wrap(tree: nodes.Node, target: nodes.Concat) -> None:
    """Replace ``target`` in its parent with ``__outreach_text(target)``."""
    for parent in tree.find_all(nodes.Node):
        for field in parent.fields:
            value = getattr(parent, field, None)
            if value is target:
                setattr(parent, field, _text_call(target))
                return
            if isinstance(value, list):
                for index, item in enumerate(value):
                    if item is target:
                        value[index] = _text_call(target)
                        return


def _text_call(target: nodes.Concat) -> nodes.Call:
    return nodes.Call(nodes.Name(_TEXT, "load"), [target], [], None, None, lineno=target.lineno)


def render_capped(chunks: Iterable[str]) -> str:
    """Join a template's output, stopping once it passes ``MAX_LETTER_CHARS``."""
    parts: list[str] = []
    size = 0
    append = parts.append
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_LETTER_CHARS:
            raise _too_long(size, "the template")
        append(chunk)
    return "".join(parts)
