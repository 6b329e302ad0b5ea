"""Matplotlib charts as inline PNG images."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

_DPI = 96


# -- plotting -----------------------------------------------------------------------------
def _figure(width: float = 7.5, height: float = 3.6) -> tuple[Any, Any]:
    # Figure without pyplot: no global state, no GUI backend, safe in any thread.
    from matplotlib.figure import Figure  # lazy: matplotlib only when the report is drawn

    figure = Figure(figsize=(width, height), dpi=_DPI)
    return figure, figure.add_subplot(1, 1, 1)


def _bar_chart(labels: list[str], values: list[float], value_label: str, title: str, horizontal: bool = False) -> bytes:
    height = max(2.4, 0.28 * len(labels) + 1.2) if horizontal else 3.6
    figure, axes = _figure(height=height)
    if horizontal:
        positions = list(range(len(labels)))[::-1]
        axes.barh(positions, values, color="#4c72b0")
        axes.set_yticks(positions, labels, fontsize=8)
        axes.set_xlabel(value_label)
    else:
        axes.bar(range(len(labels)), values, color="#4c72b0")
        axes.set_xticks(range(len(labels)), labels, fontsize=8, rotation=30 if len(labels) > 6 else 0)
        axes.set_ylabel(value_label)
    axes.set_title(title)
    return _png(figure)


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    # No Software/date chunks: the same data gives the same image bytes.
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    encoded = base64.b64encode(png).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{encoded}">'
