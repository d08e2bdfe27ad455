"""Numbers quoted in prose, tied to the metrics files that computed them.

A notebook's markdown (or the README) quotes a computed number with an invisible marker right
after it, naming where the number comes from::

    the head reaches 0.77<!-- m:06:ring_balanced_accuracy.pretrained_head.30 --> with 30 labels
    an error 33.5%<!-- m:02:mae_reduction_single_view --> below the baseline
    ahead by 0.22<!-- m:06:ring_balanced_accuracy.pretrained_head.30 - 06:ring_balanced_accuracy.scratch.30 -->

``NN:`` names the notebook (its metrics file), dots walk into nested entries (a last ``.mean``
averages a ``{name: number}`` entry), and two paths may be joined by `` - `` (a difference) or
`` / `` (a ratio). The number keeps its own style: its
decimals, a thousands comma, ``%`` (the value times 100), a trailing ``x`` or `` s``.
:func:`fill` rewrites every marked number from a course run's metrics (``make notebooks`` does
it after the run), :func:`problems` lists the ones that disagree (the test suite runs it), so a
quoted number can never drift from what the code computed.

Timings (a path ending in ``runtime_s``, see :data:`TIMINGS`) are filled the same way, but no
two runs take the same seconds: ``problems(..., timings=False)`` skips them, and the test suite
checks them against the committed course-run record of the run that filled them instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["QUOTE", "TIMINGS", "is_timing", "value_of", "render", "fill", "problems"]

#: A quoted number and its marker: ``0.77<!-- m:06:key.sub -->``, ``30.6%<!-- m:... -->``.
QUOTE = re.compile(
    r"(?P<number>-?\d[\d,]*(?:\.\d+)?)(?P<suffix>%|x| s)?<!-- m:(?P<expr>[^<>]+?) -->"
)
_OPERATORS = (" - ", " / ")
#: Metric keys that are timings of the run that wrote them (never reproduced exactly).
TIMINGS = ("runtime_s",)


def is_timing(expr: str) -> bool:
    """Whether a marker's expression quotes a timing (:data:`TIMINGS`)."""
    return any(expr.strip().endswith(key) for key in TIMINGS)


def _lookup(path: str, metrics: Mapping[str, Mapping]) -> float:
    notebook, _, keys = path.strip().partition(":")
    stems = [stem for stem in metrics if stem[:2] == notebook]
    if not keys or not stems:
        raise KeyError(f"no metrics file for notebook {notebook!r} (quoted as {path!r})")
    value = metrics[stems[0]]
    for key in keys.split("."):
        if key == "mean" and isinstance(value, Mapping) and "mean" not in value:
            value = sum(value.values()) / len(value)  # the mean of a {name: number} entry
            continue
        if not isinstance(value, Mapping) or key not in value:
            raise KeyError(f"{path!r}: no entry {key!r} in {stems[0]}'s metrics")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{path!r} is {value!r}, not a number")
    return float(value)


def value_of(expr: str, metrics: Mapping[str, Mapping]) -> float:
    """The value a marker's expression names (one path, or two joined by `` - `` / `` / ``)."""
    for op in _OPERATORS:
        if op in expr:
            left, right = (_lookup(part, metrics) for part in expr.split(op, 1))
            return left - right if op == " - " else left / right
    return _lookup(expr, metrics)


def render(value: float, like: str, suffix: str | None) -> str:
    """``value`` written in the style of the quoted text ``like`` (decimals, commas, ``%``)."""
    shown = value * 100 if suffix == "%" else value
    decimals = len(like.split(".", 1)[1]) if "." in like else 0
    text = f"{shown:,.{decimals}f}" if "," in like else f"{shown:.{decimals}f}"
    return "0" + text[2:] if text.startswith("-0") and float(text) == 0 else text


def fill(text: str, metrics: Mapping[str, Mapping]) -> str:
    """``text`` with every marked number rewritten from ``metrics`` (one that ``metrics`` cannot
    give, e.g. of a notebook that did not run, is left as it is)."""

    def new(match: re.Match) -> str:
        try:
            value = value_of(match["expr"], metrics)
        except (KeyError, TypeError, ZeroDivisionError):
            return match[0]  # not in these metrics (a notebook not run): :func:`problems` says so
        number = render(value, match["number"], match["suffix"])
        return f"{number}{match['suffix'] or ''}<!-- m:{match['expr']} -->"

    return QUOTE.sub(new, text)


def problems(
    text: str, metrics: Mapping[str, Mapping], where: str = "", timings: bool = True
) -> list[str]:
    """One line per marked number that disagrees with ``metrics`` (or names no metric);
    ``timings=False`` skips quoted timings (:func:`is_timing`)."""
    out = []
    for match in QUOTE.finditer(text):
        if not timings and is_timing(match["expr"]):
            continue
        line = text.count("\n", 0, match.start()) + 1
        try:
            expected = render(value_of(match["expr"], metrics), match["number"], match["suffix"])
        except (KeyError, TypeError, ZeroDivisionError) as err:
            out.append(f"{where}line {line}: {err}")
            continue
        if expected != match["number"]:
            out.append(
                f"{where}line {line}: quotes {match['number']}{match['suffix'] or ''} but "
                f"{match['expr']} is {expected}{match['suffix'] or ''}; run `make notebooks` "
                "(or galaxy_helpers.quotes.fill) to rewrite it"
            )
    return out
