"""CSV cells that no spreadsheet runs as a formula, for every CSV Paru writes (the Predict page's results,
the audit log's table).

A cell such as an upload named "=HYPERLINK(...).png" would otherwise be run by the spreadsheet that opens
the download (CSV injection). The one rule, here so that every CSV writer applies the same one: text
starting with FORMULA_PREFIXES gets a leading apostrophe, and control characters other than tab are dropped.
"""

from __future__ import annotations

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""What a spreadsheet may run as a formula at the start of a cell (OWASP's CSV injection list)."""


def neutralise(value):
    """A CSV cell that no spreadsheet runs as a formula: text starting with FORMULA_PREFIXES gets a leading
    apostrophe; control characters other than tab are dropped from text. Numbers and None pass unchanged."""
    if not isinstance(value, str):
        return value
    text = "".join(c for c in value if c.isprintable() or c == "\t")
    return f"'{text}" if text.startswith(FORMULA_PREFIXES) else text
