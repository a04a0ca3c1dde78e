"""What ``list`` and ``show`` print, as OpenStack's command line prints it.

``-f table`` (the default: a boxed table; ``show`` prints ``Field | Value``
rows), ``-f json`` (the views as they are), ``-f value`` (values only, one
record a line, separated by spaces: for shell scripts) and ``-f csv`` (a
header, then one record a line). ``-c COLUMN`` (repeatable) keeps those
columns, in that order. A nested value (an error, the attempts) is shown as
compact JSON in every format but ``json``.

Example::

    tasktoolkit tasks list -f value -c id -c state
    tasktoolkit operations show req-8c5a... -f json
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from tasktoolkit.commands._common import CommandError

__all__ = ["FORMATS", "output_arguments", "print_list", "print_one"]

FORMATS = ("table", "json", "value", "csv")


def output_arguments(parser: argparse.ArgumentParser) -> None:
    """``-f FORMAT`` and ``-c COLUMN`` (repeatable), as cliff's."""
    group = parser.add_argument_group("output formatters")
    group.add_argument(
        "-f",
        "--format",
        choices=FORMATS,
        default="table",
        help="the output format (default: table)",
    )
    group.add_argument(
        "-c",
        "--column",
        action="append",
        default=[],
        dest="columns",
        metavar="COLUMN",
        help="show this column (repeatable; default: the usual ones)",
    )


def _chosen(asked: Sequence[str], default: Sequence[str], known: Sequence[str]) -> list[str]:
    """The columns asked (``-c``), else ``default``; a column no record has is refused
    (when there is a record to tell)."""
    if not asked:
        return list(default)
    unknown = [name for name in asked if known and name not in known]
    if unknown:
        raise CommandError(f"no column {unknown[0]!r}; the columns are: {', '.join(known)}")
    return list(dict.fromkeys(asked))


def _text(value: Any) -> str:
    """One cell: text as it is, ``None`` as nothing, anything nested as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def print_list(
    stream: TextIO,
    args: argparse.Namespace,
    records: Sequence[Mapping[str, Any]],
    *,
    default: Sequence[str],
) -> None:
    """Records (views) as ``args.format`` says, with ``args.columns`` (else ``default``)."""
    known = list(dict.fromkeys(key for record in records for key in record))
    columns = _chosen(args.columns, default, known)
    rows = [[record.get(name) for name in columns] for record in records]
    if args.format == "json":
        json.dump([dict(zip(columns, row, strict=True)) for row in rows], stream, indent=2)
        stream.write("\n")
    elif args.format == "value":
        for row in rows:
            stream.write(" ".join(_text(value) for value in row) + "\n")
    elif args.format == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_text(value) for value in row] for row in rows)
    else:
        if rows:
            stream.write(_table(columns, [[_text(v) for v in row] for row in rows]))


def print_one(
    stream: TextIO,
    args: argparse.Namespace,
    record: Mapping[str, Any],
) -> None:
    """One record (a view): every field, or ``args.columns``, as ``args.format`` says.

    ``table`` is two columns (``Field``, ``Value``), ``value`` one value a line,
    ``csv`` a header and one row.
    """
    fields = _chosen(args.columns, list(record), list(record))
    values = [record.get(name) for name in fields]
    if args.format == "json":
        json.dump(dict(zip(fields, values, strict=True)), stream, indent=2)
        stream.write("\n")
    elif args.format == "value":
        stream.write("".join(_text(value) + "\n" for value in values))
    elif args.format == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(fields)
        writer.writerow([_text(value) for value in values])
    else:
        stream.write(
            _table(["Field", "Value"], [[f, _text(v)] for f, v in zip(fields, values, strict=True)])
        )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A boxed table (``+---+``, ``| a |``), as cliff's and prettytable's; a cell's own
    line breaks become lines of its row."""
    cells = [[str(h).splitlines() or [""] for h in header]] + [
        [value.splitlines() or [""] for value in row] for row in rows
    ]
    widths = [max(len(line) for row in cells for line in row[i]) for i in range(len(header))]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"

    def lines(row: list[list[str]]) -> str:
        height = max(len(cell) for cell in row)
        out = ""
        for n in range(height):
            parts = [
                (cell[n] if n < len(cell) else "").ljust(width)
                for cell, width in zip(row, widths, strict=True)
            ]
            out += "| " + " | ".join(parts) + " |\n"
        return out

    return rule + lines(cells[0]) + rule + "".join(lines(row) for row in cells[1:]) + rule
