"""One before/after table and one Markdown table writer, for every report the library writes.

`ChangeRow` is a row of the before/after table (metric, before, after, change) that the CLI (`compress`), the
built-in job (`hf-token-merge run`), the model card and `compare_before_after` all print; `change_table` renders a
list of them. `markdown_table` is the one Markdown table writer: the sweep, sequence and redundancy reports and the
`evaluate` report use it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hf_token_merge.errors import TokenMergeError

CHANGE_COLUMNS = ("metric", "before", "after", "change")
MISSING = "–"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A Markdown table.

    Args:
        header: Column names.
        rows: One sequence of cells per row (formatted with `str`; format numbers before).
        align: One letter per column, `l` (left, `---`) or `r` (right, `---:`); default: the first column left,
            the others right.

    Returns:
        The table, one line per row, ending in a newline.
    """
    align = align if align is not None else "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise TokenMergeError(f"align={align!r} needs one 'l' or 'r' per column ({len(header)}). Fix: e.g. 'lrr'.")
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    for row in rows:
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise TokenMergeError(f"A table row has {len(cells)} cells for {len(header)} columns: {cells}.")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass
class ChangeRow:
    """One row of the before/after table: numbers, formatted on rendering.

    Attributes:
        metric: The row's name.
        before: The value before the merge (None: not measured).
        after: The value after the merge (None: not measured).
        fmt: Format spec of the values and the change, e.g. ".4f", ",d".
    """

    metric: str
    before: float | None
    after: float | None
    fmt: str = ".4g"
    interval: str | None = None  # the change's confidence interval, e.g. "95 % CI +0.0040 to +0.0210"

    @property
    def change(self) -> float | None:
        """`after - before` (None when either is missing)."""
        return None if self.before is None or self.after is None else self.after - self.before

    @property
    def relative_change(self) -> float | None:
        """`change / before` (0 for no change from 0, None when undefined)."""
        change = self.change
        if change is None:
            return None
        return change / self.before if self.before else (0.0 if change == 0 else None)

    def rendered(self) -> dict[str, str]:
        """The row's cells as text: `metric`, `before`, `after`, `change` (with the relative change)."""
        change = self.change
        if change is None:
            shown = MISSING
        else:
            shown = f"{change:+{self.fmt}}" + (f" ({change / self.before:+.1%})" if self.before else "")
            shown += f"; {self.interval}" if self.interval else ""
        return {
            "metric": self.metric,
            "before": MISSING if self.before is None else format(self.before, self.fmt),
            "after": MISSING if self.after is None else format(self.after, self.fmt),
            "change": shown,
        }

    def to_dict(self) -> dict[str, Any]:
        """`metric`, `before`, `after`, `absolute_change`, `relative_change` (JSON-serialisable)."""
        return {
            "metric": self.metric,
            "before": self.before,
            "after": self.after,
            "absolute_change": self.change,
            "relative_change": self.relative_change,
            **({"interval": self.interval} if self.interval else {}),
        }


def number_format(*values: Any) -> str:
    """`",d"` when every given value is an int (None aside), else `".4g"`."""
    present = [value for value in values if value is not None]
    return ",d" if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present) else ".4g"


def change_rows(
    before: Mapping[str, Any], after: Mapping[str, Any], formats: Mapping[str, str] | None = None
) -> list[ChangeRow]:
    """Before/after rows of every metric in `before` (in its order).

    Args:
        before: Metric name -> value before the merge.
        after: Metric name -> value after (a missing name becomes None).
        formats: Format spec per metric; default `number_format` of its values.

    Returns:
        One `ChangeRow` per metric.
    """
    formats = formats or {}
    return [
        ChangeRow(name, before[name], after.get(name), formats.get(name, number_format(before[name], after.get(name))))
        for name in before
    ]


def change_table(rows: Iterable[ChangeRow]) -> str:
    """The before/after table (metric | before | after | change) of `rows`, as Markdown."""
    return markdown_table(CHANGE_COLUMNS, ([r[c] for c in CHANGE_COLUMNS] for r in (x.rendered() for x in rows)))
