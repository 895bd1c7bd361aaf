"""A report as a list of blocks (headings, paragraphs, tables, images), rendered to Markdown or to one
self-contained HTML page (images embedded as base64 PNG). Pure functions, no file access.

Paragraph and cell text is plain text in which `backticks` mark code.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class Image:
    """A PNG: ``path`` is where the Markdown links it (relative to the report), ``png`` its bytes."""

    path: str
    png: bytes
    caption: str


Block = Heading | Paragraph | Table | Image

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
code { background: #f3f3f3; padding: 0 0.2rem; }
"""


def to_markdown(blocks: Sequence[Block]) -> str:
    """GitHub-flavoured Markdown; images link to their ``path``."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            lines = [_md_row(block.header), _md_row(["---"] * len(block.header))]
            lines += [_md_row([f"**{c.text}**" if c.bold else c.text for c in row]) for row in block.rows]
            parts.append("\n".join(lines))
        else:
            parts.append(f"![{block.caption}]({block.path})\n\n*{block.caption}*")
    return "\n\n".join(parts) + "\n"


def to_html(blocks: Sequence[Block], title: str) -> str:
    """One HTML page that needs no other file: images are ``data:image/png;base64`` URIs."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        else:
            data = base64.b64encode(block.png).decode("ascii")
            caption = _inline(block.caption)
            parts.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.caption)}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _html_cell(cell: Cell) -> str:
    text = _inline(cell.text)
    return f"<strong>{text}</strong>" if cell.bold else text


def _inline(text: str) -> str:
    """Escaped text with `backticked` spans as ``<code>``."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))
