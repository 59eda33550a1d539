"""CSV/XLSX injection defence (OWASP "CSV Injection").

A spreadsheet treats a cell that starts with = + - @ (or tab, CR, LF, which some programs
strip before looking) as a formula. On export every such cell gets a leading apostrophe,
whatever its column; values are stored unchanged on import.
"""

DANGEROUS_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralize(value):
    if isinstance(value, str) and value.startswith(DANGEROUS_PREFIXES):
        return "'" + value
    return value


def neutralize_row(row):
    return [neutralize(value) for value in row]
