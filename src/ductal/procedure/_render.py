"""Jinja2 templates of the procedure package and HTML-to-PDF through WeasyPrint."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).parent / "templates"
FONTS = "'Noto Sans CJK SC', 'Noto Sans', 'DejaVu Sans', sans-serif"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """Return the (cached) template environment: autoescaped, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **values: Any) -> str:
    """Return ``template`` rendered with ``values`` (and the shared font stack)."""
    return environment().get_template(template).render(fonts=Markup(FONTS), **values)


def css_text(text: str) -> Markup:
    """Return ``text`` safe inside a CSS string in a ``<style>`` block (quotes and tags removed)."""
    cleaned = "".join(c for c in text if c not in '"\\<>{}' and c.isprintable())
    return Markup(cleaned)


def html_to_pdf(html: str) -> bytes:
    """Return ``html`` laid out as a PDF (A4 pages come from the template's ``@page``)."""
    import weasyprint  # imported here: it is slow to import and only PDFs need it

    # WeasyPrint logs every CSS property it does not support; they are not errors for us
    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    return bytes(weasyprint.HTML(string=html, base_url=str(TEMPLATES)).write_pdf())
