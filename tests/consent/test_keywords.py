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
    ["", "   ", "hello", "TD please", "STOP IT", "不要再发了", "退订了吗", "stopp", "no", "Y", "请回复TD退订", "TN", "N R",
     "STOP START", "TD?好的", "x" * 5000],
)
def test_anything_else_is_a_reply(text):
    assert sms_intent(text) is SmsIntent.REPLY


def test_normalize_drops_every_separator_and_folds_width_case_and_script():
    assert sms_keyword_normalize(" ｓｔｏｐ ｎｏｗ！") == "STOPNOW"
    assert sms_keyword_normalize("退訂") == "退订"
    assert sms_keyword_normalize("\u200btd\u200b") == "TD"
    assert sms_keyword_normalize(None) == ""


# As people type them: what phones and people really send ---------------------------------

REAL_WORLD_OPT_OUTS = [
    ("T D", "a space between the letters"),
    ("T-D", "a dash"),
    ("T.D.", "full stops"),
    ("T\u200bD", "a zero-width space from the keyboard"),
    ("\ufeffTD", "a byte-order mark from a gateway"),
    ("Ｔ Ｄ", "full-width with a full-width space"),
    ("t\u3000d", "an ideographic space"),
    ("退訂", "traditional characters"),
    ("退 订", "a space inside the Chinese"),
    ("TD退订", "keyword + 退订"),
    ("退订TD", "退订 + keyword"),
    ("TD 退订", "keyword, space, 退订"),
    ("退订，TD", "退订, comma, keyword"),
    ("td退訂！", "lower case, traditional, bang"),
    ("拒收 R", "拒收 with the letter the SMS told them to send"),
    ("STOP STOP", "said twice"),
    ("退订退订", "said twice in Chinese"),
    ("S T O P", "spelled out"),
    ("Stop 🙏", "an emoji"),
    ("\r\nTD\r\n", "line breaks around"),
]


@pytest.mark.parametrize(("text", "how"), REAL_WORLD_OPT_OUTS, ids=[how for _, how in REAL_WORLD_OPT_OUTS])
def test_opt_outs_as_people_type_them_withdraw(text, how):
    assert sms_intent(text) is SmsIntent.WITHDRAW


@pytest.mark.parametrize("text", ["S T A R T", "start！", "ＵＮＳＴＯＰ", "Y-E-S"])
def test_re_subscriptions_as_people_type_them_grant(text):
    assert sms_intent(text) is SmsIntent.GRANT
