"""How many SMS parts a text costs (GSM 03.38 / 3GPP TS 23.038).

A text that fits the GSM-7 alphabet costs 160 septets in one part, 153 per part once it is
split (the user-data header takes the rest). One character outside GSM-7 — any Chinese
character, an emoji, even a curly quote or a no-break space — switches the whole message to
UCS-2: 70 characters in one part, 67 per part. Characters of the GSM-7 extension table
(€ [ ] { } ^ ~ | \\ and form feed) are sent as ESC + char and cost two septets.

Parts are counted by packing greedily, as handsets and gateways do, because an escape pair
(GSM-7) or a surrogate pair (UCS-2, emoji) is never split across two parts: a simple
ceil(length / per_part) can be one part short.
"""

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "GSM-7"
UCS2 = "UCS-2"

_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SmsLength:
    """``chars`` is the billed length: septets for GSM-7 (extension characters count 2),
    UTF-16 code units for UCS-2 (characters outside the BMP, such as emoji, count 2)."""

    chars: int
    encoding: str
    parts: int
    per_part: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, encoding: str) -> list[int]:
    if encoding == GSM7:
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def sms_parts(text: str) -> SmsLength:
    """The encoding, billed length and number of parts of ``text`` as it will be sent."""
    encoding = GSM7 if is_gsm7(text) else UCS2
    single, multi = _LIMITS[encoding]
    costs = _unit_costs(text, encoding)
    total = sum(costs)
    if total == 0:
        return SmsLength(chars=0, encoding=encoding, parts=0, per_part=single)
    if total <= single:
        return SmsLength(chars=total, encoding=encoding, parts=1, per_part=single)
    parts, used = 1, 0
    for cost in costs:
        if used + cost > multi:
            parts += 1
            used = 0
        used += cost
    return SmsLength(chars=total, encoding=encoding, parts=parts, per_part=multi)
