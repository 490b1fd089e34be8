"""SVG status badges: ``[ web1 | UP ]`` in the flat style READMEs and wikis show. Pure.

A badge is two boxes of text. The width of each box comes from the advance
widths of DejaVu Sans at 11 px (the font most viewers fall back to), so the
text fits without measuring it in a browser. Every text is escaped: a host
name reaches the SVG as text, never as markup.
"""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape

__all__ = ["COLOURS", "render_badge", "text_width"]

COLOURS: Final = {
    "UP": "#2e7d32", "DOWN": "#c62828", "UNREACHABLE": "#ef6c00", "UNKNOWN": "#757575",
    "operational": "#2e7d32", "degraded": "#ef6c00", "outage": "#c62828", "no hosts": "#757575",
    "maintenance": "#8250df",
}
"""Background of the message box by state (anything else: grey)."""
_GREY: Final = "#757575"
_LABEL: Final = "#555"
_WIDTHS: Final = {
    **dict.fromkeys("iljI|!.,:;'", 3.5), **dict.fromkeys("frt()[]{} -", 4.5),
    **dict.fromkeys("mwMW", 10.0), **dict.fromkeys("ABCDEGHKNOQRUVXYZ", 8.0),
    **dict.fromkeys("abcdeghknopqsuvxyz0123456789_FJLPST", 7.0),
}
_DEFAULT_WIDTH: Final = 7.5
_PAD: Final = 6


def text_width(text: str) -> int:
    """About how wide ``text`` is at 11 px, in pixels (rounded up)."""
    return int(sum(_WIDTHS.get(ch, _DEFAULT_WIDTH) for ch in text) + 0.999)


def render_badge(label: str, message: str, colour: str | None = None) -> str:
    """An SVG badge: ``label`` on grey, ``message`` on its state's colour."""
    label, message = label[:64], message[:64]
    fill = colour or COLOURS.get(message, _GREY)
    left = text_width(label) + 2 * _PAD
    right = text_width(message) + 2 * _PAD
    width = left + right
    title = escape(f"{label}: {message}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{escape(title, {chr(34): "&quot;"})}">'
        f"<title>{title}</title>"
        f'<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" '
        f'stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{width}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{left}" height="20" fill="{_LABEL}"/>'
        f'<rect x="{left}" width="{right}" height="20" fill="{fill}"/>'
        f'<rect width="{width}" height="20" fill="url(#s)"/></g>'
        f'<g fill="#fff" text-anchor="middle" font-family="DejaVu Sans,Verdana,Geneva,'
        f'sans-serif" font-size="11">'
        f'<text x="{left / 2:g}" y="14">{escape(label)}</text>'
        f'<text x="{left + right / 2:g}" y="14">{escape(message)}</text></g></svg>'
    )
