"""Reports as pages people can read: the Markdown the library writes, rendered to HTML with markdown-it-py.

The Markdown stays the one source: headings, pipe tables (the before/after table, the measures) and figures
written as a paragraph that starts with the image and goes on with its caption in words::

    ![Pairwise cosine similarity ...](pairwise.png)
    *Figure 1. Pairwise cosine similarity ...*

Such a paragraph becomes `<figure><img><figcaption>`; every other block is markdown-it-py's CommonMark output
with tables enabled. Figures are embedded as base64 PNG, so the page survives being copied or mailed alone.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from pathlib import Path

# Figure file name (without .png) -> what it shows, in words; `{value}` is "cosine similarity" or "Euclidean
# distance" (the config's metric). A figure not listed here is captioned from its name.
FIGURE_CAPTIONS = {
    "pairwise": "How alike the selected rows are: the {value} of pairs of rows (a sample when there are many).",
    "nearest_neighbour": "How close each row's nearest other row is: the {value} to its nearest neighbour.",
    "threshold_curve": "How much could merge: the rows left after merging every pair closer than each threshold.",
    "pca_spectrum": "How many directions the rows use: the cumulative variance explained by principal components.",
    "tsne": "A t-SNE map of the rows: the ten largest clusters of the merge plan in colour, other rows in grey.",
    "umap": "A UMAP map of the rows: the ten largest clusters of the merge plan in colour, other rows in grey.",
    "layer_adjacent_cosine": "Adjacent speech positions by layer: the mean cosine of neighbouring hidden states.",
    "layer_cka": "How alike the layers are: linear CKA between the hidden states of every pair of layers.",
}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 62em; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.5; }
h1, h2, h3 { line-height: 1.25; } h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d8dee4; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: .35em .8em; } th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fbfcfd; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: 4px; font-size: 90%; word-break: break-word; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #d8dee4; }
figcaption { color: #57606a; font-size: 95%; margin-top: .4em; }
"""


def figure_caption(name: str, metric: str = "cosine") -> str:
    """The caption of a figure, in words.

    Args:
        name: The figure's file name without `.png` (e.g. `nearest_neighbour`).
        metric: The analysis metric, `cosine` or `euclidean`.

    Returns:
        A sentence from `FIGURE_CAPTIONS`, or the name in words for a figure it does not list.
    """
    value = "cosine similarity" if metric == "cosine" else "Euclidean distance"
    if name in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[name].format(value=value)
    return name.replace("_", " ").capitalize() + "."


def figure_markdown(number: int, name: str, file: str, metric: str = "cosine") -> str:
    """A figure as Markdown: the image and, in the same paragraph, its numbered caption in words.

    Args:
        number: The figure's number in the report.
        name: The figure's name (the key of `FIGURE_CAPTIONS`).
        file: The image path relative to the report.
        metric: The analysis metric, for the caption.

    Returns:
        The paragraph, ending in a blank line.
    """
    caption = figure_caption(name, metric)
    return f"![{caption}]({file})\n*Figure {number}. {caption}*\n\n"


def shift_headings(markdown: str, levels: int = 1) -> str:
    """Move every ATX heading (`#`, `##`, ...) down `levels` levels, to nest one report inside another."""
    return re.sub(r"^(#{1,5}) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", markdown, flags=re.M)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(markdown: str, title: str, base_dir: str | os.PathLike[str] | None = None) -> str:
    """Render a report's Markdown to a self-contained HTML page.

    Args:
        markdown: The report (headings, pipe tables, figure paragraphs, see the module docstring).
        title: The page title.
        base_dir: Folder that relative image paths are read from; the images found there are embedded as base64.

    Returns:
        The page.
    """
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = parser.parse(markdown)
    env: dict = {}
    parts: list[str] = []
    pending: list = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        children = tokens[index + 1].children if index + 1 < len(tokens) else None
        if token.type == "paragraph_open" and children and children[0].type == "image":
            if pending:
                parts.append(parser.renderer.render(pending, parser.options, env))
                pending = []
            parts.append(_figure(parser, children, base_dir, env))
            index += 3  # paragraph_open, inline, paragraph_close
            continue
        pending.append(token)
        index += 1
    if pending:
        parts.append(parser.renderer.render(pending, parser.options, env))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "".join(parts)
        + "</body></html>\n"
    )


def _figure(parser, children: Sequence, base_dir: str | os.PathLike[str] | None, env: dict) -> str:
    """`<figure>` of an image paragraph: the image (embedded when found) and the rest of the paragraph as caption."""
    image = children[0]
    source = image.attrGet("src") or ""
    alt = "".join(child.content for child in (image.children or []))
    local = Path(base_dir, source) if base_dir is not None and "://" not in source else None
    if local is not None and local.is_file():
        source = _data_uri(local)
    rest = list(children[1:])
    while rest and rest[0].type in ("softbreak", "hardbreak"):
        rest.pop(0)
    caption = parser.renderer.renderInline(rest, parser.options, env).strip() if rest else html.escape(alt)
    return (
        f'<figure><img src="{html.escape(source, quote=True)}" alt="{html.escape(alt, quote=True)}">'
        f"<figcaption>{caption}</figcaption></figure>\n"
    )
