"""CSV/XLSX injection defence (core.csv_safety)."""

import pytest

from core.csv_safety import DANGEROUS_PREFIXES, neutralize, neutralize_row


@pytest.mark.parametrize("first", ["=", "+", "-", "@", "\t", "\r", "\n"])
def test_each_dangerous_first_character_gets_an_apostrophe(first):
    assert first in DANGEROUS_PREFIXES
    assert neutralize(f"{first}SUM(A1:A9)") == f"'{first}SUM(A1:A9)"


@pytest.mark.parametrize("value", ["张伟", "a=b", "user@example.com", "1+1", "  a =b", "", "'already", "\u3000张伟", "Ａ＝Ｂ"])
def test_safe_text_is_unchanged(value):
    assert neutralize(value) == value


@pytest.mark.parametrize("value", [None, 5, -5, 3.5])
def test_non_text_values_are_unchanged(value):
    # numbers are typed cells in XLSX and cannot be formulas; CSV exports stringify first
    assert neutralize(value) == value


def test_neutralize_row_escapes_every_cell_whatever_its_column():
    assert neutralize_row(["=1", "ok", "@x", None]) == ["'=1", "ok", "'@x", None]


@pytest.mark.parametrize("sign", ["=", "+", "-", "@", "＝", "＋", "－", "＠", "﹦", "﹢", "﹣", "\u2212"])
@pytest.mark.parametrize(
    "blank", ["", " ", "\u00a0", "\u200b", "\u3000", "\t", "\ufeff", " \u3000\u200b"],
    ids=["none", "space", "nbsp", "zwsp", "ideographic-space", "tab", "bom", "mixed"],
)
def test_a_sign_a_spreadsheet_reads_as_a_formula_is_neutralized_after_any_blank(sign, blank):
    value = f"{blank}{sign}HYPERLINK(\"http://evil.example\",\"x\")"
    assert neutralize(value) == "'" + value


def test_every_export_path_uses_the_same_rule():
    from core.exports import _xlsx_text, csv_stream

    value = "\u3000＝HYPERLINK(http://evil.example)"
    text = "".join(csv_stream(header=["name"], rows=[[value]]))
    assert "'" + value in text
    assert _xlsx_text(value) == "'" + value
