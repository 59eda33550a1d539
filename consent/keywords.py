"""What an inbound SMS asks for: stop, start again, or nothing.

Chinese carriers' convention (回复TD退订, 拒收请回复R) and the US CTIA keywords are both honoured.
Only the whole message counts: "TD" withdraws, "TD please" is a reply a person should read.
People type keywords as their phone lets them: full-width letters (ＳＴＯＰ), punctuation
(退订。 Stop!), spaces or dashes inside (T D, T-D), zero-width spaces a keyboard inserted,
traditional characters (退訂), or the keyword and 退订 together (TD退订, 退订 TD). So the text is
NFKC-folded, stripped of every space, punctuation, symbol and invisible character, mapped to
simplified characters and upper-cased; then it is a keyword, or a run of two or more withdrawal
keywords ("TD退订"), or a reply.
"""

import enum
import unicodedata


class SmsIntent(enum.StrEnum):
    WITHDRAW = "withdraw"
    GRANT = "grant"
    REPLY = "reply"


WITHDRAW_KEYWORDS = frozenset(
    {"TD", "T", "N", "R", "退订", "拒收", "STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
GRANT_KEYWORDS = frozenset({"START", "UNSTOP", "YES"})

# Keywords that may be run together ("TD退订", "退订TD", "STOPSTOP"): single letters are left out,
# or "TN" or "NR" (initials, "no" in a chat) would withdraw. A single letter still counts next to
# a Chinese keyword, as the SMS asked for it ("拒收请回复R" answered "拒收R").
COMBINABLE_KEYWORDS = frozenset(keyword for keyword in WITHDRAW_KEYWORDS if len(keyword) > 1)
_CHINESE_KEYWORDS = frozenset(keyword for keyword in WITHDRAW_KEYWORDS if not keyword.isascii())
_LETTER_KEYWORDS = frozenset(keyword for keyword in WITHDRAW_KEYWORDS if len(keyword) == 1)
_CHINESE_WITH_LETTER = frozenset(
    pair for chinese in _CHINESE_KEYWORDS for letter in _LETTER_KEYWORDS for pair in (chinese + letter, letter + chinese)
)

# Unicode general categories removed wherever they are: punctuation (P*, which covers 。！，【】
# and the dash of "T-D"), separators (Z*, the ideographic space U+3000 and the space of "T D"),
# symbols (S*, e.g. ~ or an emoji) and control/format characters (Cc, Cf: CR/LF and the
# zero-width spaces some keyboards insert).
_REMOVED_CATEGORIES = ("P", "Z", "S", "Cc", "Cf")

# Traditional characters of the keywords (Hong Kong, Taiwan, and phones set to them).
_SIMPLIFIED = str.maketrans({"訂": "订", "閱": "阅", "絕": "绝", "錄": "录"})

# No keyword, however dressed, is longer than this: a longer text is a reply without folding it.
_LONGEST_DRESSED_KEYWORD = 64


def _removed(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith(_REMOVED_CATEGORIES)


def sms_keyword_normalize(text: str) -> str:
    """``"  ＳＴＯＰ！ "`` -> ``"STOP"``, ``"T-D"`` -> ``"TD"``, ``"退訂"`` -> ``"退订"``."""
    folded = unicodedata.normalize("NFKC", text or "")
    return "".join(char for char in folded if not _removed(char)).translate(_SIMPLIFIED).upper()


def _is_withdraw_run(keyword: str) -> bool:
    """Whether ``keyword`` is two or more combinable withdrawal keywords written together."""
    if not keyword:
        return False
    if keyword in _CHINESE_WITH_LETTER:
        return True
    reachable = {0}  # positions where a run of keywords can end
    for end in range(1, len(keyword) + 1):
        if any(start in reachable and keyword[start:end] in COMBINABLE_KEYWORDS for start in range(end)):
            reachable.add(end)
    return len(keyword) in reachable and keyword not in COMBINABLE_KEYWORDS


def sms_intent(text: str) -> SmsIntent:
    if len(text or "") > _LONGEST_DRESSED_KEYWORD:
        return SmsIntent.REPLY
    keyword = sms_keyword_normalize(text)
    if keyword in WITHDRAW_KEYWORDS or _is_withdraw_run(keyword):
        return SmsIntent.WITHDRAW
    if keyword in GRANT_KEYWORDS:
        return SmsIntent.GRANT
    return SmsIntent.REPLY
