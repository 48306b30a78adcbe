"""One self-contained HTML page per run: inline CSS, plots as embedded PNG, no external resources.

The page must open from a copied folder or an e-mail attachment with no network, so nothing is
linked (no CDN, fonts or scripts) and every piece of text is HTML-escaped. Every figure is also
written as SVG and PDF into ``figures/`` beside the page, for papers.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from gliotl.core.io import write_bytes, write_json, write_text

FIGURES_FOLDER = "figures"
"""Where ``Report.write`` puts each figure's SVG and PDF, beside the HTML page."""
FIGURE_FORMATS = ("svg", "pdf")
# What Report.write names its figure files: running number, the label's words, a format.
_FIGURE_FILE = re.compile(r"\d{2,}-[a-z0-9-]+\.(?:" + "|".join(FIGURE_FORMATS) + ")")
# No creation dates in the vector files: the same run gives the same bytes.
_VECTOR_METADATA = {"svg": {"Date": None}, "pdf": {"CreationDate": None}}

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { border-bottom: 2px solid #3b6ea5; padding-bottom: .2em; }
h2 { margin-top: 1.8em; color: #24476b; }
table { border-collapse: collapse; margin: 1em 0; font-size: .92em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .3em; }
th, td { border: 1px solid #c9d3df; padding: .3em .6em; text-align: right; }
th { background: #eef3f8; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #f8fafc; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; border: 1px solid #e0e0e0; }
figcaption { font-size: .9em; color: #555; }
figcaption .files { color: #888; font-size: .85em; }
pre { background: #f5f5f7; padding: .8em; overflow-x: auto; font-size: .88em; }
.note { padding: .6em .9em; border-left: 4px solid #3b6ea5; background: #eef3f8; margin: 1em 0; }
.note.warning { border-color: #c77700; background: #fff4e0; }
details { margin: 1em 0; }
summary { cursor: pointer; color: #24476b; }
.footer { margin-top: 3em; font-size: .8em; color: #777; }
"""


def _format_cell(value: Any, float_format: str) -> tuple[str, bool]:
    """Cell text and whether it is numeric (right-aligned)."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value)), False
    if isinstance(value, int | np.integer):
        return str(int(value)), True
    if isinstance(value, float | np.floating):
        if np.isnan(value):
            return "", True
        return float_format.format(float(value)), True
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "", False
    return str(value), False


class Report:
    """Builds the HTML page block by block; ``html()`` renders it, ``write()`` saves it."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._blocks: list[str] = []
        self._figures: dict[str, dict[str, bytes]] = {}

    def heading(self, text: str, level: int = 2) -> Report:
        level = min(max(int(level), 1), 6)
        self._blocks.append(f"<h{level}>{html.escape(str(text))}</h{level}>")
        return self

    def paragraph(self, text: str) -> Report:
        self._blocks.append(f"<p>{html.escape(str(text))}</p>")
        return self

    def note(self, text: str, kind: str = "info") -> Report:
        css = "warning" if kind == "warning" else "info"
        self._blocks.append(f'<div class="note {css}">{html.escape(str(text))}</div>')
        return self

    def table(self, df: pd.DataFrame, caption: str | None = None,
              float_format: str = "{:.3f}") -> Report:
        """A plain HTML table; NaN cells are left blank, all text escaped."""
        parts = ["<table>"]
        if caption:
            parts.append(f"<caption>{html.escape(str(caption))}</caption>")
        header = "".join(f'<th class="text">{html.escape(str(c))}</th>' for c in df.columns)
        parts.append(f"<thead><tr>{header}</tr></thead><tbody>")
        for row in df.itertuples(index=False):
            cells = []
            for value in row:
                text, numeric = _format_cell(value, float_format)
                css = "" if numeric else ' class="text"'
                cells.append(f"<td{css}>{html.escape(text)}</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</tbody></table>")
        self._blocks.append("".join(parts))
        return self

    def figure(self, fig: Any, caption: str | None = None, dpi: int = 110,
               name: str | None = None) -> Report:
        """Embed a matplotlib figure as a base64 PNG, keep its SVG and PDF for ``write()``, and
        close it (figures hold memory). ``name`` (default: from the caption) names the files."""
        import matplotlib.pyplot as plt

        buffer = io.BytesIO()
        vectors: dict[str, bytes] = {}
        try:
            fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
            with plt.rc_context({"svg.hashsalt": "gliotl"}):  # stable ids inside the SVG
                for fmt in FIGURE_FORMATS:
                    vector = io.BytesIO()
                    fig.savefig(vector, format=fmt, bbox_inches="tight",
                                metadata=_VECTOR_METADATA[fmt])
                    vectors[fmt] = vector.getvalue()
        finally:
            plt.close(fig)
        stem = self._figure_stem(name or caption or "figure")
        self._figures[stem] = vectors
        data = base64.b64encode(buffer.getvalue()).decode("ascii")
        alt = html.escape(str(caption or "figure"), quote=True)
        block = (f'<figure data-file="{html.escape(stem, quote=True)}">'
                 f'<img alt="{alt}" src="data:image/png;base64,{data}">')
        links = " ".join(f"{FIGURES_FOLDER}/{stem}.{fmt}" for fmt in FIGURE_FORMATS)
        text = f"{caption} " if caption else ""
        block += (f'<figcaption>{html.escape(text)}'
                  f'<span class="files">({html.escape(links)})</span></figcaption>')
        self._blocks.append(block + "</figure>")
        return self

    def _figure_stem(self, label: str) -> str:
        """A unique, plain file stem: running number and the label's words."""
        words = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()[:60].strip("-")
        return f"{len(self._figures) + 1:02d}-{words or 'figure'}"

    @property
    def figure_files(self) -> list[str]:
        """Paths, relative to the page's folder, of the vector files ``write()`` saves."""
        return [f"{FIGURES_FOLDER}/{stem}.{fmt}" for stem in self._figures
                for fmt in FIGURE_FORMATS]

    def config(self, config: dict[str, Any], caption: str = "Configuration",
               non_default: dict[str, Any] | None = None) -> Report:
        """The config as YAML, so the page says exactly what was run: with ``non_default``, only
        the values that differ from gliotl's defaults are shown and the full resolved config
        (also in ``config.yaml``) sits in a collapsed block."""
        text = yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True)
        self.heading(caption, 2)
        if non_default is None:
            self._blocks.append(f"<pre>{html.escape(text)}</pre>")
            return self
        short = yaml.safe_dump(_plain(non_default), sort_keys=False, allow_unicode=True)
        self.paragraph("Values that differ from gliotl's defaults:")
        self._blocks.append(f'<pre class="config-non-default">{html.escape(short)}</pre>')
        self._blocks.append("<details><summary>Full resolved configuration (as in config.yaml)"
                            f"</summary><pre>{html.escape(text)}</pre></details>")
        return self

    def html(self) -> str:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        body = "\n".join(self._blocks)
        title = html.escape(self.title)
        return (
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{title}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{title}</h1>\n{body}\n"
            f'<p class="footer">Generated by gliotl, {html.escape(stamp)}</p>\n'
            "</body></html>\n"
        )

    def write(self, path: str | Path) -> Path:
        """The page, and each figure's SVG and PDF in ``figures/`` beside it (figures first, so
        a page never names files that are not there).

        ``figures/<page>.files.json`` lists what this page wrote there; rewriting the page
        removes the files its earlier version listed and this one no longer has (a rerun with
        fewer figures leaves none behind). Nothing that list does not name is ever removed.
        """
        path = Path(path)
        folder = path.parent / FIGURES_FOLDER
        listing = folder / f"{path.stem}.files.json"
        earlier = _listed_files(listing)
        names = [Path(name).name for name in self.figure_files]
        if self._figures or earlier:
            folder.mkdir(parents=True, exist_ok=True)
        for stem, vectors in self._figures.items():
            for fmt, data in vectors.items():
                write_bytes(folder / f"{stem}.{fmt}", data)
        if self._figures or earlier:
            write_json(listing, names)
        written = write_text(path, self.html())
        for name in sorted(set(earlier) - set(names)):
            (folder / name).unlink(missing_ok=True)
        return written


def _listed_files(listing: Path) -> list[str]:
    """The plain file names an earlier page listed (anything else in the list is ignored)."""
    if not listing.is_file():
        return []
    try:
        names = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str) and _FIGURE_FILE.fullmatch(name)]


def _plain(obj: Any) -> Any:
    """Make configs YAML-safe (paths, numpy scalars, tuples)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    return str(obj)


__all__ = ["Report"]
