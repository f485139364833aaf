"""Theme-aware colours for Rich renderables (table cells, plot lines).

Textual CSS uses `$success`, `$error`, … directly; Rich `Text` in a DataTable cell and
plotext lines need concrete colours. `palette(app)` resolves the current theme's semantic
variables to `#rrggbb` (colours with alpha are blended over the background), so cells and
plots follow the theme, light or dark. Callers re-read it when `app.theme` changes.
"""

from __future__ import annotations

from textual.color import Color

ROLES = (
    "primary",
    "secondary",
    "accent",
    "success",
    "warning",
    "error",
    "foreground",
    "background",
    "surface",
    "panel",
    "foreground-muted",
)


def palette(app) -> dict[str, str]:
    """Semantic role -> '#rrggbb' for the app's current theme (adds 'muted')."""
    v = app.theme_variables
    bg = Color.parse(v.get("background", "#000000"))
    out: dict[str, str] = {}
    for role in ROLES:
        try:
            c = Color.parse(v[role])
        except (KeyError, Exception):
            continue
        if c.a < 1:
            c = bg.blend(c.with_alpha(1.0), c.a)
        out[role] = c.hex6
    fg = Color.parse(out.get("foreground", "#e0e0e0"))
    out["muted"] = bg.blend(fg, 0.6).hex6
    return out


def rgb(hex6: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b), the form plotext takes."""
    return Color.parse(hex6).rgb
