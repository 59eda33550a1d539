import pytest

from consent.keywords import GRANT_KEYWORDS, WITHDRAW_KEYWORDS, SmsIntent, sms_intent, sms_keyword_normalize

ALL_WITHDRAW = ["TD", "T", "N", "R", "退订", "拒收", "STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def test_the_keyword_tables_are_exactly_the_documented_ones():
    assert WITHDRAW_KEYWORDS == set(ALL_WITHDRAW)
    assert GRANT_KEYWORDS == {"START", "UNSTOP", "YES"}


@pytest.mark.parametrize("keyword", ALL_WITHDRAW)
@pytest.mark.parametrize(
    "dress",
    [
        lambda k: k,
        lambda k: k.lower(),
        lambda k: k.title(),
        lambda k: f"  {k.lower()} ",
        lambda k: f"{k}。",
        lambda k: f"{k}!",
        lambda k: f"【{k}】",
        lambda k: f"\u3000{k}，\r\n",
        lambda k: _full_width(k),
        lambda k: f"“{k}”！！",
    ],
    ids=["as-is", "lower", "title", "spaces", "cn-full-stop", "bang", "cn-brackets", "ideographic-space", "full-width", "quotes"],
)
def test_every_withdrawal_keyword_in_any_dress_withdraws(keyword, dress):
    assert sms_intent(dress(keyword)) is SmsIntent.WITHDRAW


@pytest.mark.parametrize("text", ["  td ", "退订。", "Stop!", "ＳＴＯＰ", "ｔｄ", "拒收！", "r", "optout.", "QUIT\n"])
def test_the_examples_from_the_brief_withdraw(text):
    assert sms_intent(text) is SmsIntent.WITHDRAW


@pytest.mark.parametrize("text", ["START", "start", " Unstop ", "yes!", "ＹＥＳ", "Start。"])
def test_grant_keywords_grant(text):
    assert sms_intent(text) is SmsIntent.GRANT


@pytest.mark.parametrize(
    "text",
    ["", "   ", "hello", "TD please", "STOP IT", "T D", "不要再发了", "退订了吗", "stopp", "no", "Y", "请回复TD退订", "S T O P"],
)
def test_anything_else_is_a_reply(text):
    assert sms_intent(text) is SmsIntent.REPLY


def test_normalize_keeps_inner_characters_and_folds_width_and_case():
    assert sms_keyword_normalize(" ｓｔｏｐ ｎｏｗ！") == "STOP NOW"
    assert sms_keyword_normalize("\u200btd\u200b") == "TD"
    assert sms_keyword_normalize(None) == ""
