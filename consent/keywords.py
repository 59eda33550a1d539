"""What an inbound SMS asks for: stop, start again, or nothing.

Chinese carriers' convention (回复TD退订, 拒收请回复R) and the US CTIA keywords are both honoured.
Only the whole message counts: "TD" withdraws, "TD please" is a reply a person should read.
Phones type full-width letters (ＳＴＯＰ) and add punctuation (退订。 Stop!), so the text is
NFKC-folded, trimmed of surrounding spaces, punctuation and symbols, and upper-cased first.
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

# Unicode general categories trimmed from both ends: punctuation (P*, which covers 。！，【】),
# separators (Z*, which covers the ideographic space U+3000), symbols (S*, e.g. ~ or an emoji)
# and control/format characters (Cc, Cf: CR/LF, zero-width spaces some keyboards insert).
_TRIMMED_CATEGORIES = ("P", "Z", "S", "Cc", "Cf")


def _trimmed(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith(_TRIMMED_CATEGORIES)


def sms_keyword_normalize(text: str) -> str:
    """``"  ＳＴＯＰ！ "`` -> ``"STOP"``; inner characters are kept as they are."""
    folded = unicodedata.normalize("NFKC", text or "")
    start, end = 0, len(folded)
    while start < end and _trimmed(folded[start]):
        start += 1
    while end > start and _trimmed(folded[end - 1]):
        end -= 1
    return folded[start:end].upper()


def sms_intent(text: str) -> SmsIntent:
    keyword = sms_keyword_normalize(text)
    if keyword in WITHDRAW_KEYWORDS:
        return SmsIntent.WITHDRAW
    if keyword in GRANT_KEYWORDS:
        return SmsIntent.GRANT
    return SmsIntent.REPLY
