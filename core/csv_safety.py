"""CSV/XLSX injection defence (OWASP "CSV Injection").

A spreadsheet treats a cell that starts with = + - @ (or tab, CR, LF, which some programs
strip before looking) as a formula. It also skips leading blanks of any kind before looking
(space, no-break space, the ideographic space U+3000, zero-width spaces), and Excel with a
Chinese or Japanese input method reads the full-width signs ＝＋－＠ like their ASCII twins.
On export every such cell gets a leading apostrophe, whatever its column; values are stored
unchanged on import.
"""

import unicodedata

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
# Signs that become = + - @ when folded (NFKC: full-width ＝＋－＠, small ﹦﹢﹣), and the
# minus sign U+2212, which spreadsheets also read as a minus.
_MINUS_SIGN = "\u2212"


def _blank(char: str) -> bool:
    # isspace covers space, tab, CR, LF, NBSP and U+3000; Cf covers ZWSP, ZWJ and the BOM.
    return char.isspace() or unicodedata.category(char) == "Cf"


def is_dangerous(value: str) -> bool:
    """Whether a spreadsheet could read ``value`` as a formula."""
    if value.startswith(DANGEROUS_PREFIXES):
        return True
    start = 0
    while start < len(value) and _blank(value[start]):
        start += 1
    if start == len(value):
        return False
    first = value[start]
    return first == _MINUS_SIGN or unicodedata.normalize("NFKC", first) in DANGEROUS_PREFIXES[:4]


def neutralize(value):
    if isinstance(value, str) and value and is_dangerous(value):
        return "'" + value
    return value


def neutralize_row(row):
    return [neutralize(value) for value in row]
