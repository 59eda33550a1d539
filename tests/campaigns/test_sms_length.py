import pytest

from campaigns.sms_length import SmsLength, sms_parts


@pytest.mark.parametrize(
    ("text", "chars", "encoding", "parts", "per_part"),
    [
        ("", 0, "GSM-7", 0, 160),
        ("a" * 160, 160, "GSM-7", 1, 160),
        ("a" * 161, 161, "GSM-7", 2, 153),
        ("a" * 306, 306, "GSM-7", 2, 153),
        ("a" * 307, 307, "GSM-7", 3, 153),
        ("中" * 70, 70, "UCS-2", 1, 70),
        ("中" * 71, 71, "UCS-2", 2, 67),
        ("中" * 134, 134, "UCS-2", 2, 67),
        ("中" * 135, 135, "UCS-2", 3, 67),
    ],
)
def test_length_at_the_part_boundaries(text, chars, encoding, parts, per_part):
    assert sms_parts(text) == SmsLength(chars=chars, encoding=encoding, parts=parts, per_part=per_part)


def test_one_chinese_character_switches_a_latin_text_to_ucs2():
    # Given 69 GSM characters and one Chinese: 70 UCS-2 units, still one part
    assert sms_parts("a" * 69 + "退").parts == 1
    assert sms_parts("a" * 69 + "退").encoding == "UCS-2"
    # A 100-character GSM text is one part in GSM-7 but two once a single 中 joins it
    assert sms_parts("a" * 100).parts == 1
    assert sms_parts("a" * 99 + "中").parts == 2


@pytest.mark.parametrize("char", list("€[]{}^~|\\"))
def test_extension_characters_count_twice(char):
    # Given 159 basic characters plus one extension character: 161 septets
    result = sms_parts("a" * 159 + char)
    assert result.encoding == "GSM-7"
    assert result.chars == 161
    assert result.parts == 2
    assert sms_parts("a" * 158 + char).parts == 1


def test_escape_pair_is_never_split_across_parts():
    # 152 septets then € (2 septets) does not fit in the 153 of part one: it opens part two.
    text = "a" * 152 + "€" + "a" * 152
    result = sms_parts(text)
    assert result.chars == 306  # 306 would fit two parts by simple division...
    assert result.parts == 3  # ...but the escape pair cannot straddle the boundary


def test_emoji_counts_two_ucs2_units():
    result = sms_parts("🎉" * 35)
    assert (result.encoding, result.chars, result.parts) == ("UCS-2", 70, 1)
    assert sms_parts("🎉" * 36).parts == 2


@pytest.mark.parametrize("char", ["\xa0", "“", "’", "【", "—"])
def test_lookalike_characters_are_not_gsm7(char):
    # A no-break space or a curly quote pasted from a word processor doubles the cost.
    assert sms_parts("Hello" + char).encoding == "UCS-2"


def test_gsm7_accented_letters_stay_gsm7():
    assert sms_parts("Café à Zürich £5 ¥3 @home").encoding == "GSM-7"
