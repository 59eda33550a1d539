from datetime import datetime

import pytest

from reactivation.imports.reading import UnusableFile, detect_encoding, open_table, sniff_delimiter, xlsx_cell_text

HEADER_AND_ROW = "用户ID,姓名\nC1,张三\n"


@pytest.mark.parametrize(
    ("encoding", "bom", "expected"),
    [("utf-8", False, "utf-8"), ("utf-8", True, "utf-8-sig"), ("gbk", False, "gb18030"), ("gb18030", False, "gb18030")],
)
def test_encoding_is_detected(csv_file, encoding, bom, expected):
    # given a file saved as Excel or a script would save it
    path = csv_file(HEADER_AND_ROW, encoding=encoding, bom=bom)
    # when it is opened with encoding=auto
    with open_table(path) as table:
        rows = list(table.rows())
    # then the encoding is detected and Chinese text reads back intact
    assert table.encoding == expected
    assert table.header[0].lstrip("\ufeff") == "用户ID"
    assert rows == [(2, ["C1", "张三"])]


def test_utf16_with_bom_is_read(csv_file):
    path = csv_file("external_id\tname\nC1\t王五\n", encoding="utf-16")
    with open_table(path) as table:
        assert table.encoding == "utf-16"
        assert table.delimiter == "\t"
        assert list(table.rows()) == [(2, ["C1", "王五"])]


def test_encoding_override_wins(csv_file):
    path = csv_file(HEADER_AND_ROW, encoding="gbk")
    with open_table(path, encoding="gbk") as table:
        assert list(table.rows()) == [(2, ["C1", "张三"])]


def test_utf8_sample_cut_inside_a_character_is_still_utf8():
    data = "张".encode("utf-8") * 10
    assert detect_encoding(data[:-1], at_eof=False) == "utf-8"


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_line_endings(csv_file, newline):
    path = csv_file('external_id,name\nC1,"two\nlines"\nC2,x\n', newline=newline)
    with open_table(path) as table:
        rows = list(table.rows())
    # the quoted newline stays in the value; line numbers are physical lines where the record starts
    assert rows[0][0] == 2 and rows[0][1][1].replace("\r\n", "\n") == "two\nlines"
    assert rows[1] == (4, ["C2", "x"])


@pytest.mark.parametrize(("line", "expected"), [("a,b,c", ","), ("a;b;c", ";"), ("a\tb\tc", "\t"), ("a", ",")])
def test_delimiter_is_sniffed(line, expected):
    assert sniff_delimiter(line) == expected


def test_semicolon_file(csv_file):
    path = csv_file("external_id;name\nC1;Li, Lei\n")
    with open_table(path) as table:
        assert table.delimiter == ";"
        assert list(table.rows()) == [(2, ["C1", "Li, Lei"])]


def test_blank_lines_are_skipped_and_short_rows_padded(csv_file):
    path = csv_file("external_id,name,email\n\nC1\n,,\nC2,x,y\n")
    with open_table(path) as table:
        assert list(table.rows()) == [(3, ["C1", "", ""]), (4, ["", "", ""]), (5, ["C2", "x", "y"])]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"external_id,name\nC1,\x00\x01\x02", "binary"),
        (b"external_id\x00name\n", "binary"),
        ("external_id,name\nC1,".encode() + bytes([0x81, 0x20, 0xfe]) * 3 + b"\n", "cannot be decoded"),
        (b"\n\nC1,x\n", "blank"),
    ],
)
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UnusableFile, match=message):
        with open_table(path) as table:
            list(table.rows())


def test_undecodable_bytes_after_the_sample_are_unusable(tmp_path):
    # given a file whose first 64 KB are clean UTF-8 but which breaks later on
    path = tmp_path / "late.csv"
    path.write_bytes(b"external_id,name\n" + b"C1,ok\n" * 20_000 + b"C2,\xff\xfe\n")
    with open_table(path) as table:
        assert table.encoding == "utf-8"
        with pytest.raises(UnusableFile, match="after line"):
            list(table.rows())


def test_size_limit(csv_file):
    path = csv_file(HEADER_AND_ROW)
    with pytest.raises(UnusableFile, match="too large"):
        open_table(path, max_bytes=10)


def test_row_limit(csv_file):
    path = csv_file("external_id\nC1\nC2\nC3\n")
    with open_table(path, max_rows=2) as table:
        with pytest.raises(UnusableFile, match="more than 2 data rows"):
            list(table.rows())


def test_unknown_encoding_name(csv_file):
    with pytest.raises(UnusableFile, match="Unknown encoding"):
        open_table(csv_file(HEADER_AND_ROW), encoding="klingon")


def test_xlsx_rows_stream_as_text(xlsx_file):
    path = xlsx_file([
        ["external_id", "phone", "signup_at", "total_spent", None],
        ["C1", 13812345678, datetime(2024, 1, 5, 9, 30), 12.5],
        [None, None, None, None],
        ["C2", "+8613912345678", "2024/1/5", 3],
    ])
    with open_table(path) as table:
        rows = list(table.rows())
    assert table.format == "xlsx" and table.header == ["external_id", "phone", "signup_at", "total_spent"]
    assert rows == [
        (2, ["C1", "13812345678", "2024-01-05 09:30:00", "12.5"]),
        (4, ["C2", "+8613912345678", "2024/1/5", "3"]),
    ]


def test_broken_xlsx_is_unusable(tmp_path):
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04" + b"not really a zip")
    with pytest.raises(UnusableFile, match="XLSX"):
        open_table(path)


def test_xlsx_cell_text():
    assert xlsx_cell_text(None) == ""
    assert xlsx_cell_text(True) == "true"
    assert xlsx_cell_text(3.0) == "3"
    assert xlsx_cell_text(0.1) == "0.1"


# Unbalanced quotes ----------------------------------------------------------------------------
def test_unterminated_quote_refuses_the_file_instead_of_swallowing_rows(csv_file):
    # given a stray quote that is never closed: everything after it would become one cell
    path = csv_file('external_id,name\nA1,"unterminated\nA2,x\n')
    # when the rows are read, then the file is refused as a whole, naming where the quote starts
    with open_table(path) as table, pytest.raises(UnusableFile, match="unbalanced quote.*starts on line 2"):
        list(table.rows())


def test_quote_followed_by_text_refuses_the_file(csv_file):
    # given "Bob" Smith (non-strict csv would quietly read it as Bob Smith)
    path = csv_file('external_id,name\nA1,x\nA2,"Bob" Smith\nA3,y\n')
    with open_table(path) as table, pytest.raises(UnusableFile, match="unbalanced quote on line 3"):
        list(table.rows())


def test_quote_that_swallows_lines_names_them_all(csv_file):
    path = csv_file('external_id,name\nA1,"opens\nA2,x\nA3,"closes late\n')
    with open_table(path) as table, pytest.raises(UnusableFile, match="unbalanced quote on lines 2-4"):
        list(table.rows())


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_quoted_value_with_line_breaks_still_reads(csv_file, newline):
    # given an address over two lines, with a comma and an escaped quote, as Excel writes it
    path = csv_file('external_id,address,tier\nA1,"1 Main St, Apt ""4""\nSpringfield, IL",gold\nA2,x,y\n',
                    newline=newline)
    with open_table(path) as table:
        rows = list(table.rows())
    # then the value keeps its line break and the next record keeps its physical line number
    assert rows == [(2, ["A1", f'1 Main St, Apt "4"{newline}Springfield, IL', "gold"]), (4, ["A2", "x", "y"])]
