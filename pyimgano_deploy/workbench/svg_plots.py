"""Tiny dependency-free SVG plots for the HTML report: line plot and histogram with axes.

Each function returns one ``<svg>`` element as a string (inline in HTML, no external assets).
All text is escaped with ``html.escape``. Non-finite values are dropped; a plot with nothing to
draw shows a centred "n/a" message instead of failing.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["LineSeries", "HistGroup", "nice_ticks", "format_tick", "line_plot", "histogram_plot"]

_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 58, 16, 30, 46
_FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


@dataclass
class LineSeries:
    """One polyline: ``x``/``y`` arrays, legend ``label``, CSS ``color``, optional SVG ``dash``."""

    x: Sequence[float]
    y: Sequence[float]
    label: str
    color: str = "#1f77b4"
    dash: str | None = None
    width: float = 2.0


@dataclass
class HistGroup:
    """One set of values drawn as semi-transparent bars."""

    values: Sequence[float]
    label: str
    color: str = "#1f77b4"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (steps of 1, 2, 2.5 or 5 x 10^k) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while start + k * step <= hi + 1e-9 * step:
        ticks.append(round(start + k * step, 12))
        k += 1
    return ticks


def format_tick(value: float) -> str:
    """Short label for a tick: integers without decimals, else up to 4 significant digits."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.2g}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"


class _Frame:
    """Maps data coordinates to pixels inside the plot area and draws the axes."""

    def __init__(self, width: int, height: int, xlim: tuple[float, float], ylim: tuple[float, float]):
        self.width, self.height = width, height
        self.x0, self.x1 = _MARGIN_LEFT, width - _MARGIN_RIGHT
        self.y0, self.y1 = height - _MARGIN_BOTTOM, _MARGIN_TOP  # y0 = bottom pixel
        self.xlim = xlim if xlim[1] > xlim[0] else (xlim[0] - 0.5, xlim[0] + 0.5)
        self.ylim = ylim if ylim[1] > ylim[0] else (ylim[0] - 0.5, ylim[0] + 0.5)

    def px(self, x: float) -> float:
        lo, hi = self.xlim
        return self.x0 + (x - lo) / (hi - lo) * (self.x1 - self.x0)

    def py(self, y: float) -> float:
        lo, hi = self.ylim
        return self.y0 - (y - lo) / (hi - lo) * (self.y0 - self.y1)

    def _ticks(self, axis: str) -> list[str]:
        """Grid line, tick mark and label of every nice tick on the ``"x"`` or ``"y"`` axis."""
        out = []
        for t in nice_ticks(*(self.xlim if axis == "x" else self.ylim)):
            label = _esc(format_tick(t))
            if axis == "x":
                x = self.px(t)
                grid = (x, self.y1, x, self.y0)
                mark = (x, self.y0, x, self.y0 + 5)
                text = f"<text x='{x:.1f}' y='{self.y0 + 17}' font-size='11' text-anchor='middle' {_FONT}>{label}</text>"
            else:
                y = self.py(t)
                grid = (self.x0, y, self.x1, y)
                mark = (self.x0 - 5, y, self.x0, y)
                text = f"<text x='{self.x0 - 8}' y='{y + 4:.1f}' font-size='11' text-anchor='end' {_FONT}>{label}</text>"
            for (a, b, c, d), colour in ((grid, "#eee"), (mark, "#333")):
                out.append(f"<line x1='{a:.1f}' y1='{b:.1f}' x2='{c:.1f}' y2='{d:.1f}' stroke='{colour}'/>")
            out.append(text)
        return out

    def axes(self, title: str, xlabel: str, ylabel: str) -> list[str]:
        out = [
            f"<rect class='plot-area' x='{self.x0}' y='{self.y1}' width='{self.x1 - self.x0}' "
            f"height='{self.y0 - self.y1}' fill='#ffffff' stroke='#333' stroke-width='1'/>"
        ]
        out += self._ticks("x") + self._ticks("y")
        cx = (self.x0 + self.x1) / 2
        cy = (self.y0 + self.y1) / 2
        out.append(
            f"<text x='{cx:.1f}' y='{self.height - 8}' font-size='12' text-anchor='middle' {_FONT}>"
            f"{_esc(xlabel)}</text>"
        )
        out.append(
            f"<text x='14' y='{cy:.1f}' font-size='12' text-anchor='middle' {_FONT} "
            f"transform='rotate(-90 14 {cy:.1f})'>{_esc(ylabel)}</text>"
        )
        out.append(
            f"<text x='{cx:.1f}' y='18' font-size='13' font-weight='bold' text-anchor='middle' {_FONT}>"
            f"{_esc(title)}</text>"
        )
        return out

    def legend(self, entries: Sequence[tuple[str, str, str | None]], corner: str = "top-right") -> list[str]:
        """``entries``: (label, color, dash); drawn in a white box inside the plot area."""
        if not entries:
            return []
        row_h, box_w = 16, 14 + 7 * max(len(label) for label, _, _ in entries) + 26
        box_h = row_h * len(entries) + 8
        bx = self.x1 - box_w - 8 if corner.endswith("right") else self.x0 + 8
        by = self.y1 + 8 if corner.startswith("top") else self.y0 - box_h - 8
        out = [
            f"<rect class='legend' x='{bx}' y='{by}' width='{box_w}' height='{box_h}' "
            f"fill='#ffffff' fill-opacity='0.9' stroke='#999'/>"
        ]
        for i, (label, color, dash) in enumerate(entries):
            y = by + 12 + i * row_h
            dash_attr = f" stroke-dasharray='{dash}'" if dash else ""
            out.append(
                f"<line x1='{bx + 6}' y1='{y}' x2='{bx + 26}' y2='{y}' stroke='{_esc(color)}' "
                f"stroke-width='3'{dash_attr}/>"
            )
            out.append(f"<text x='{bx + 32}' y='{y + 4}' font-size='11' {_FONT}>{_esc(label)}</text>")
        return out

    def message(self, text: str) -> str:
        return (
            f"<text class='na' x='{(self.x0 + self.x1) / 2:.1f}' y='{(self.y0 + self.y1) / 2:.1f}' "
            f"font-size='14' fill='#888' text-anchor='middle' {_FONT}>{_esc(text)}</text>"
        )


def _svg(width: int, height: int, body: list[str], css_class: str, aria: str) -> str:
    return (
        f"<svg class='{css_class}' xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        f"viewBox='0 0 {width} {height}' role='img' aria-label='{_esc(aria)}'>" + "".join(body) + "</svg>"
    )


def line_plot(
    series: Sequence[LineSeries],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float] | None = None,
    width: int = 420,
    height: int = 340,
    legend_corner: str = "bottom-right",
    empty_message: str = "n/a",
    note: str | None = None,
) -> str:
    """Polylines with axes, ticks, labels and a legend. Points with a non-finite x or y are dropped;
    a series left with no point is omitted; if none is left the plot shows ``empty_message``.
    ``note``: an extra centred grey message (e.g. why a curve is missing)."""
    cleaned: list[tuple[LineSeries, np.ndarray, np.ndarray]] = []
    for s in series:
        x = np.asarray(s.x, dtype=np.float64).ravel()
        y = np.asarray(s.y, dtype=np.float64).ravel()
        if x.shape != y.shape:
            raise ValueError(f"series {s.label!r}: x has {x.size} points but y has {y.size}")
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            cleaned.append((s, x[ok], y[ok]))
    if xlim is None:
        xs = np.concatenate([c[1] for c in cleaned]) if cleaned else np.array([0.0, 1.0])
        xlim = (float(xs.min()), float(xs.max()))
    if ylim is None:
        ys = np.concatenate([c[2] for c in cleaned]) if cleaned else np.array([0.0, 1.0])
        ylim = (float(ys.min()), float(ys.max()))
    frame = _Frame(width, height, xlim, ylim)
    body = frame.axes(title, xlabel, ylabel)
    for s, x, y in cleaned:
        pts = " ".join(f"{frame.px(a):.2f},{frame.py(b):.2f}" for a, b in zip(x, y))
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        body.append(
            f"<polyline class='series' points='{pts}' fill='none' stroke='{_esc(s.color)}' "
            f"stroke-width='{s.width}' stroke-linejoin='round'{dash}/>"
        )
    if cleaned:
        body += frame.legend([(s.label, s.color, s.dash) for s, _, _ in cleaned], legend_corner)
    else:
        body.append(frame.message(empty_message))
    if note:
        body.append(frame.message(note))
    return _svg(width, height, body, "line-plot", title)


def histogram_plot(
    groups: Sequence[HistGroup],
    *,
    title: str,
    xlabel: str,
    ylabel: str = "count",
    bins: int = 20,
    vline: float | None = None,
    vline_label: str = "threshold",
    width: int = 420,
    height: int = 340,
    empty_message: str = "n/a",
) -> str:
    """Overlaid histograms sharing one set of ``bins`` equal-width bins over the range of all
    values (and of ``vline``), with an optional dashed vertical line (class ``threshold-line``)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    vals = [np.asarray(g.values, dtype=np.float64).ravel() for g in groups]
    vals = [v[np.isfinite(v)] for v in vals]
    has_line = vline is not None and math.isfinite(float(vline))
    pooled = np.concatenate(vals + ([np.array([float(vline)])] if has_line else [])) if vals else np.array([])
    if pooled.size == 0 or not any(v.size for v in vals):
        frame = _Frame(width, height, (0.0, 1.0), (0.0, 1.0))
        return _svg(width, height, frame.axes(title, xlabel, ylabel) + [frame.message(empty_message)],
                    "histogram", title)
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    counts = [np.histogram(v, bins=edges)[0] for v in vals]
    ymax = max(int(c.max()) for c in counts) if counts else 1
    frame = _Frame(width, height, (float(edges[0]), float(edges[-1])), (0.0, max(ymax, 1) * (1.1 + 0.12 * (len(groups) + 1))))  # headroom: legend
    body = frame.axes(title, xlabel, ylabel)
    for g, c in zip(groups, counts):
        for k, n in enumerate(c):
            if n == 0:
                continue
            x_left, x_right = frame.px(edges[k]), frame.px(edges[k + 1])
            y_top = frame.py(float(n))
            body.append(
                f"<rect class='bar' x='{x_left:.2f}' y='{y_top:.2f}' width='{max(x_right - x_left, 0.5):.2f}' "
                f"height='{frame.y0 - y_top:.2f}' fill='{_esc(g.color)}' fill-opacity='0.5' "
                f"stroke='{_esc(g.color)}' stroke-width='0.8'/>"
            )
    entries: list[tuple[str, str, str | None]] = [
        (f"{g.label} (n={v.size})", g.color, None) for g, v in zip(groups, vals)
    ]
    if has_line:
        x = frame.px(float(vline))
        body.append(
            f"<line class='threshold-line' data-value='{float(vline):.6g}' x1='{x:.2f}' y1='{frame.y1}' "
            f"x2='{x:.2f}' y2='{frame.y0}' stroke='#d62728' stroke-width='2' stroke-dasharray='6 4'/>"
        )
        entries.append((f"{vline_label} = {float(vline):.4g}", "#d62728", "6 4"))
    body += frame.legend(entries, "top-right")
    return _svg(width, height, body, "histogram", title)
