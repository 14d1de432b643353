"""Tables that fit the terminal they are printed on, without cutting a value in two.

Every table ftqueue prints is a ``FitTable``: columns that carry a priority, and cells that
wrap only at separators (spaces, commas, ``=``, ``/``), never inside a number or a word. At
the width of the console it is printed on, a table tries its layouts in turn (the full one,
then any narrower ones it was given); when none fits, its lowest-priority columns go, and a
note under it names them; when even the columns that must stay do not fit, each row is
printed as a block of its own, one field a line. Rich lays the columns out with the widths
chosen here (``no_wrap``, fixed widths): it never folds a cell.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions
    from rich.measure import Measurement
    from rich.text import Text

#: A column with this priority (the default) is never hidden; others go lowest first.
KEEP = 1000
#: What a note under a table with hidden columns suggests, unless the table says otherwise.
HINT = "widen the terminal or use --json"

# A line breaks after a run of spaces, commas or semicolons; a piece still too long for its
# column breaks after '=', '/', ':' or '|' too. Never elsewhere: numbers and names stay whole.
_WORDS = re.compile(r"[^\s,;]*[\s,;]*")
_PARTS = re.compile(r"[^\s,;=/:|]*[\s,;=/:|]*")

#: A cell: program text with rich markup (``str``), user text as it is (``Text``, made by
#: ``ftqueue.core.text.literal``), or a list of either, one per line.
Cell = Any


@dataclass(frozen=True)
class Column:
    """A column: its header, how soon it may be hidden, and how its cells may break."""

    header: Any  # str (plain) or Text; "\n" starts a second header line
    priority: int = KEEP
    justify: Literal["left", "right"] = "left"
    #: Free text (names, lists, messages): may take several lines, broken at separators.
    wrap: bool = False
    #: The fewest characters a wrapping column is given while the table keeps this layout.
    min_width: int = 0
    #: At most this many lines a cell, the last ending in "…" when text was left out; for
    #: messages whose start is enough (a frame of `top`). The cut falls between words.
    max_lines: int | None = None
    style: str | None = None


def text_of(value: Any) -> Text:
    """A cell or header line as Text: markup in program strings, user Text as it is."""
    from rich.text import Text

    if isinstance(value, Text):
        return value
    return Text.from_markup(str(value))


def _lines(cell: Cell) -> list[Text]:
    from rich.text import Text

    items = cell if isinstance(cell, list | tuple) else [cell]
    out: list[Text] = []
    for item in items:
        out.extend(text_of(item).split("\n", allow_blank=True) or [Text("")])
    return out or [Text("")]


def _header_lines(header: Any) -> list[Text]:
    from rich.text import Text

    text = header if isinstance(header, Text) else Text(str(header))
    return list(text.split("\n", allow_blank=True)) or [Text("")]


def pieces(text: str, *, fine: bool = True) -> list[str]:
    """The pieces ``text`` may break between (each with its trailing separators)."""
    pattern = _PARTS if fine else _WORDS
    return [m.group() for m in pattern.finditer(text) if m.group()]


def _cell_len(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def least_width(text: str) -> int:
    """The narrowest a line can be broken to at separators: its longest unbreakable piece."""
    return max((_cell_len(p.rstrip()) for p in pieces(text)), default=0)


def wrap(line: Text, width: int) -> list[Text]:
    """``line`` broken at separators into lines no wider than ``width``; a piece longer than
    ``width`` (wider than the whole terminal) is the one thing ever cut."""
    plain = line.plain
    if _cell_len(plain) <= width:
        return [line]
    spans: list[tuple[int, int]] = []
    at = 0
    for word in pieces(plain, fine=False):
        if _cell_len(word.rstrip()) <= width:
            spans.append((at, at + len(word)))
        else:
            start = at
            for part in pieces(word):
                spans.append((start, start + len(part)))
                start += len(part)
        at += len(word)
    out: list[Text] = []
    start = end = 0
    for a, b in spans:
        if end > start and _cell_len(plain[start:b].rstrip()) > width:
            out.append(line[start:end])
            start = a
        end = b
        while _cell_len(plain[start:end].rstrip()) > width:  # one piece wider than the room
            cut = start + max(1, width)
            out.append(line[start:cut])
            start = cut
    if end > start:
        out.append(line[start:end])
    for text in out:
        text.rstrip()
    return out


def _clip(lines: list[Text], width: int, max_lines: int | None) -> list[Text]:
    """Each line wrapped to ``width``; with ``max_lines``, the first lines and a "…"."""
    wrapped = [w for line in lines for w in wrap(line, width)]
    if max_lines is None or len(wrapped) <= max_lines:
        return wrapped
    shorter = [w for line in lines for w in wrap(line, max(1, width - 1))][:max_lines]
    shorter[-1].rstrip()
    shorter[-1].append("…")
    return shorter


@dataclass
class Layout:
    """Columns and their cells, one list of cells per row."""

    columns: list[Column]
    rows: list[list[Cell]]
    lines: list[list[list[Text]]] = field(init=False, repr=False)
    _sizes: dict[tuple[str, int], int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.lines = [[_lines(cell) for cell in row] for row in self.rows]

    def natural(self, i: int) -> int:
        """Column ``i``'s width when nothing limits it."""
        if ("natural", i) not in self._sizes:
            self._sizes["natural", i] = self._natural(i)
        return self._sizes["natural", i]

    def least(self, i: int) -> int:
        """The narrowest column ``i`` may be in this layout."""
        if ("least", i) not in self._sizes:
            self._sizes["least", i] = self._least(i)
        return self._sizes["least", i]

    def _natural(self, i: int) -> int:
        texts = [*_header_lines(self.columns[i].header), *(ln for r in self.lines for ln in r[i])]
        return max((t.cell_len for t in texts), default=0)

    def _least(self, i: int) -> int:
        column = self.columns[i]
        header = max((least_width(h.plain) for h in _header_lines(column.header)), default=0)
        cells = [ln for r in self.lines for ln in r[i]]
        if column.max_lines is not None:
            body = min(self.natural(i), max(column.min_width, 10))
        elif column.wrap:
            body = max((least_width(t.plain) for t in cells), default=0)
            body = max(body, min(column.min_width, self.natural(i)))
        else:
            body = max((t.cell_len for t in cells), default=0)
        return max(header, body, 1)


@dataclass
class Plan:
    """What a table looks like at one width: its layout, shown columns and their widths."""

    layout: Layout
    shown: list[int]
    widths: list[int]
    hidden: list[int]
    stacked: bool = False


class FitTable:
    """A table drawn to the width of the console it is printed on (see the module's text).

    ``alternatives`` are narrower layouts of the same data, tried in order before any column
    is hidden; with ``one_line``, columns are hidden while the rows would take more than one
    line each, before any cell wraps (a dashboard row per worker or job); ``width`` caps the
    width below the console's; ``options`` go to rich's Table (box, padding, edges).
    """

    def __init__(
        self,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Cell]],
        *,
        title: Any = None,
        alternatives: Sequence[tuple[Sequence[Column], Sequence[Sequence[Cell]]]] = (),
        hint: str = HINT,
        width: int | None = None,
        row_styles: Sequence[str | None] | None = None,
        one_line: bool = False,
        **options: Any,
    ) -> None:
        self.layouts = [Layout(list(columns), [list(r) for r in rows])]
        self.layouts += [Layout(list(c), [list(r) for r in rs]) for c, rs in alternatives]
        self.title = title
        self.hint = hint
        self.width = width
        self.row_styles = list(row_styles) if row_styles else None
        self.options = options
        self.one_line = one_line
        self._overhead: dict[int, int] = {}

    # --- choosing a layout ------------------------------------------------------------------

    def overhead(self, count: int) -> int:
        """The width borders and padding take around ``count`` columns: measured, not
        computed, so that it is what rich's Table adds for these options."""
        if count not in self._overhead:
            from rich.console import Console
            from rich.measure import Measurement

            table = self._rich_table()
            for _ in range(count):
                table.add_column("", width=1, no_wrap=True)
            table.add_row(*(["x"] * count))
            wide = Console(width=10_000)
            self._overhead[count] = Measurement.get(wide, wide.options, table).maximum - count
        return self._overhead[count]

    def _rich_table(self) -> Any:
        from rich.table import Table

        drop = ("title_style", "title_justify")
        return Table(expand=False, **{k: v for k, v in self.options.items() if k not in drop})

    def _need(self, layout: Layout, shown: list[int], *, natural: bool = False) -> int:
        size = layout.natural if natural else layout.least
        return sum(size(i) for i in shown) + self.overhead(len(shown))

    def plan(self, width: int | None) -> Plan:
        """The layout, columns and widths for a console ``width`` wide (None: unlimited)."""
        main = self.layouts[0]
        if width is None:
            every = list(range(len(main.columns)))
            return Plan(main, every, [main.natural(i) for i in every], [])
        for layout in self.layouts:
            every = list(range(len(layout.columns)))
            if self._need(layout, every, natural=self.one_line) <= width:
                return self._spread(layout, every, [], width)
        last = self.layouts[-1]
        shown = list(range(len(last.columns)))
        hidden: list[int] = []
        order = sorted(
            (i for i in shown if last.columns[i].priority < KEEP),
            key=lambda i: (last.columns[i].priority, -i),
        )
        for i in order:
            if self._need(last, shown, natural=self.one_line) <= width:
                break
            shown.remove(i)
            hidden.append(i)
        if self._need(last, shown) <= width:
            return self._spread(last, shown, hidden, width)
        return Plan(main, list(range(len(main.columns))), [], [], stacked=True)

    def _spread(self, layout: Layout, shown: list[int], hidden: list[int], width: int) -> Plan:
        """Every shown column at its least width, then the room left given out: first to the
        columns that then fit on one line, smallest need first, the rest shared evenly."""
        widths = {i: layout.least(i) for i in shown}
        natural = {i: layout.natural(i) for i in shown}
        spare = width - self.overhead(len(shown)) - sum(widths.values())
        while spare > 0:
            short = sorted((natural[i] - widths[i], i) for i in shown if widths[i] < natural[i])
            if not short:
                break
            need, i = short[0]
            if need <= spare:
                widths[i] += need
                spare -= need
                continue
            share, extra = divmod(spare, len(short))
            for n, (_, j) in enumerate(short):
                widths[j] += share + (1 if n < extra else 0)
            break
        return Plan(layout, shown, [widths[i] for i in shown], hidden)

    # --- drawing ----------------------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> Iterator[Any]:
        width = options.max_width if self.width is None else min(self.width, options.max_width)
        plan = self.plan(width)
        if self.title is not None:
            style = self.options.get("title_style") or "table.title"
            for line in wrap(text_of(self.title), width):
                line.stylize(style)
                yield line
        if plan.stacked:
            yield from self._stacked(plan.layout, width)
            return
        yield self._table(plan)
        if plan.hidden:
            yield from self._note(plan, width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        from rich.measure import Measurement

        main = self.layouts[0]
        every = list(range(len(main.columns)))
        most = sum(main.natural(i) for i in every) + self.overhead(len(every))
        least = min(
            sum(lay.least(i) for i in range(len(lay.columns))) + self.overhead(len(lay.columns))
            for lay in self.layouts
        )
        return Measurement(min(least, most), most).with_maximum(options.max_width)

    def _table(self, plan: Plan) -> Any:
        table = self._rich_table()
        layout = plan.layout
        for i, width in zip(plan.shown, plan.widths, strict=True):
            column = layout.columns[i]
            header = _join([w for h in _header_lines(column.header) for w in wrap(h, width)])
            table.add_column(
                header,
                justify=column.justify,
                style=column.style,
                no_wrap=True,
                width=width,
                overflow="crop",
            )
        for n, row in enumerate(layout.lines):
            cells = [
                _join(_clip(row[i], width, layout.columns[i].max_lines))
                for i, width in zip(plan.shown, plan.widths, strict=True)
            ]
            table.add_row(*cells, style=self.row_styles[n] if self.row_styles else None)
        return table

    def _note(self, plan: Plan, width: int) -> Iterator[Text]:
        from rich.text import Text

        names = [_plain_header(plan.layout.columns[i].header) for i in sorted(plan.hidden)]
        count = len(names)
        text = Text(
            f"{count} column{'s' if count > 1 else ''} hidden at {width} columns: "
            f"{', '.join(names)}; {self.hint}",
            style="dim",
        )
        yield from wrap(text, width)

    def _stacked(self, layout: Layout, width: int) -> Iterator[Any]:
        """One block per row: each field on a line of its own, its name first."""
        from rich.text import Text

        keys = [_plain_header(c.header) for c in layout.columns]
        if not any(keys):  # names and values (no headers): each name, its values under it
            for row in layout.lines:
                for n, (column, cell) in enumerate(zip(layout.columns, row, strict=True)):
                    indent = "  " if n else ""
                    for line in _clip(cell, width - len(indent), column.max_lines):
                        yield Text.assemble(indent, line, style="bold" if not n else "")
            return
        key_width = max((_cell_len(k) for k in keys), default=0)
        room = width - key_width - 1
        values = [ln.plain for row in layout.lines for cell in row for ln in cell]
        beside = room >= max(10, max((least_width(v) for v in values), default=0))
        for n, row in enumerate(layout.lines):
            if n:
                yield Text("")
            for key, column, cell in zip(keys, layout.columns, row, strict=True):
                lines = _clip(cell, room if beside else width - 2, column.max_lines)
                if not any(line.plain for line in lines):
                    continue
                name = Text(key, style="bold")
                if beside:
                    name.pad_right(key_width + 1 - name.cell_len)
                    yield Text.assemble(name, lines[0])
                    for line in lines[1:]:
                        yield Text.assemble(" " * (key_width + 1), line)
                else:
                    yield name
                    for line in lines:
                        yield Text.assemble("  ", line)


def _join(lines: list[Text]) -> Text:
    from rich.text import Text

    return Text("\n").join(lines)


def _plain_header(header: Any) -> str:
    return " ".join(line.plain for line in _header_lines(header))
