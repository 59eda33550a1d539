"""Links in messages: the claim page of a grant, and links to the shop tagged with UTM parameters.

Both run once per message on the sending path, so they are pure functions of their arguments
and settings, and the shop link is memoized: a run sends the same few links thousands of times.
"""

import functools
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.urls import get_script_prefix, get_urlconf, reverse
from django.utils.text import slugify

from core.tokens import absolute_url, claim_token_make

DEFAULT_UTM_SOURCE = "winback"
# Links that lead to no web page: a UTM parameter there is at best noise, at worst a broken link.
_UNTAGGED_SCHEMES = frozenset({"mailto", "tel", "sms", "javascript", "data"})


def claim_url(*, grant_id: int) -> str:
    """The absolute URL of the claim page of grant ``grant_id`` (``SITE_URL`` + path).

    Exactly ``SITE_URL + reverse("offers:claim", args=[token])``, but ``reverse`` costs ~50 µs,
    more than the rest of an in-app message: the path around the token is reversed once per
    URLconf and script prefix. A token's characters (base 62, base64url and ".") are never
    escaped by ``reverse``, so splicing it in gives the same string (``tests/campaigns/test_links.py``).
    """
    before, after = _claim_path_around(get_urlconf() or settings.ROOT_URLCONF, get_script_prefix())
    return absolute_url(f"{before}{claim_token_make(grant_id=grant_id)}{after}")


_PLACEHOLDER = "claim-token-placeholder"


@functools.lru_cache(maxsize=8)
def _claim_path_around(urlconf: str, script_prefix: str) -> tuple[str, str]:
    path = reverse("offers:claim", args=[_PLACEHOLDER], urlconf=urlconf)
    before, _, after = path.rpartition(_PLACEHOLDER)
    return before, after


def shop_link(*, url: str, channel: str, campaign_name: str, content: str = "") -> str:
    """``url`` with ``utm_source`` (settings.UTM_SOURCE), ``utm_medium`` (the channel: email, sms,
    in_app, web), ``utm_campaign`` (a slug of the campaign name) and, when given, ``utm_content``.

    The URL's own query string and fragment are kept as they are, and a utm_* parameter it
    already carries wins over ours (the marketer who wrote it meant it). Non-web links (mailto:,
    tel:...) and blank ones come back unchanged.
    """
    source = getattr(settings, "UTM_SOURCE", "") or DEFAULT_UTM_SOURCE
    return _shop_link(url or "", source, channel or "", campaign_name or "", content or "")


def utm_campaign(name: str) -> str:
    """The campaign's name as a slug: lower case, dashes, and CJK kept as written ("双11-回归").

    Analytics tools show utm_campaign decoded, so a Chinese name stays readable there; in the
    URL it is percent-encoded UTF-8.
    """
    return slugify(name, allow_unicode=True)


@functools.lru_cache(maxsize=2048)
def _shop_link(url: str, source: str, channel: str, campaign_name: str, content: str) -> str:
    parts = urlsplit(url.strip())
    if not url.strip() or parts.scheme.lower() in _UNTAGGED_SCHEMES:
        return url
    present = {key.lower() for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    wanted = [
        ("utm_source", source),
        ("utm_medium", channel),
        ("utm_campaign", utm_campaign(campaign_name)),
        ("utm_content", content),
    ]
    added = urlencode([(key, value) for key, value in wanted if value and key not in present], quote_via=quote)
    if not added:
        return url
    # Appended to the query as written rather than re-encoded: a shop's own parameters (signed
    # ones, or ones encoded in an unusual way) must reach it byte for byte.
    query = f"{parts.query}&{added}" if parts.query else added
    return urlunsplit(parts._replace(query=query))
