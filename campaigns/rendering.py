"""Render message templates in a restricted context.

Marketers write templates in the Django template language, but a template is not trusted
code: it is compiled by a sandboxed ``Engine`` that has no template loaders (no
``{% include %}``/``{% extends %}`` of files), no ``{% load %}``-able libraries, and only an
allow-list of the built-in tags and filters (``{% debug %}`` would print the whole context and
``sys.modules``; ``{% url %}`` and ``{% lorem %}`` have no place in a message). The context
holds plain dicts of strings, numbers and dates built here — never model instances — so a
template cannot reach ``customer.email``, call a method or walk to another table; Django
already refuses names that start with an underscore.

Email and phone are deliberately not in the context: no message needs to print the address it
is sent to, and previews are shown to marketers who may not hold the personal-data permission.

HTML fields are rendered with autoescape on (customer names are user input); subjects, text,
SMS and in-app fields with autoescape off (they are not HTML). Any failure — a syntax error,
an unknown tag, an exception while rendering — becomes ``TemplateRenderError`` naming the field.
"""

import functools
import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from html import unescape
from html.parser import HTMLParser
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.template import Context, Engine, Library
from django.template import defaultfilters, defaulttags
from django.template.loader import render_to_string
from django.urls import get_urlconf, reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from consent.models import Channel
from core import tokens

DEFAULT_BRAND = "品牌"

ALLOWED_TAGS = frozenset(
    {
        "autoescape", "comment", "cycle", "filter", "firstof", "for", "if", "ifchanged", "now",
        "regroup", "resetcycle", "spaceless", "templatetag", "verbatim", "widthratio", "with",
    }
)
# pprint shows object internals; dictsort resolves arbitrary attribute paths; the padding
# filters take a width from the template and can allocate gigabytes.
BLOCKED_FILTERS = frozenset({"pprint", "dictsort", "dictsortreversed", "ljust", "rjust", "center"})


class TemplateRenderError(Exception):
    """A template failed to compile or render. ``field`` names the template field."""

    def __init__(self, message: str, *, field: str = ""):
        super().__init__(message)
        self.field = field
        self.message = message

    def __str__(self):
        return f"{self.field}: {self.message}" if self.field else self.message


@dataclass(frozen=True)
class RenderedMessage:
    """One message ready for a transport.

    Email: ``subject``, ``html`` (full document with the layout and unsubscribe footer) and
    ``text`` (the plain-text part, footer included). SMS: ``text`` only, WITHOUT the 【signature】
    and the opt-out instruction, which the SMS transport adds. In-app: ``title``, ``body``,
    ``deep_link``. ``unsubscribe_url`` is the link used in the message (for List-Unsubscribe
    and the in-app footer).
    """

    subject: str = ""
    html: str = ""
    text: str = ""
    title: str = ""
    body: str = ""
    deep_link: str = ""
    unsubscribe_url: str = ""
    preferences_url: str = ""


# The sandbox --------------------------------------------------------------------------------


def _sandbox_library() -> Library:
    library = Library()
    library.tags = {name: tag for name, tag in defaulttags.register.tags.items() if name in ALLOWED_TAGS}
    library.filters = {name: f for name, f in defaultfilters.register.filters.items() if name not in BLOCKED_FILTERS}
    return library


class _SandboxEngine(Engine):
    default_builtins: list = []

    def get_template_builtins(self, builtins):
        return [_SANDBOX_LIBRARY]


_SANDBOX_LIBRARY = _sandbox_library()
_HTML_ENGINE = _SandboxEngine(loaders=[], libraries={}, autoescape=True, string_if_invalid="")
_TEXT_ENGINE = _SandboxEngine(loaders=[], libraries={}, autoescape=False, string_if_invalid="")


# ``{{ customer.name }}``: a variable made of plain names (no filter, no literal, no index, no
# leading underscore). Anything else in a template goes through the full engine.
_SIMPLE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*)*)\s*\}\}")


def _simple_parts(source: str):
    """Split a template that is only text and simple variables into literal strings and
    lookup paths; None when it holds anything else (tags, filters, comments).

    Most message templates are of this kind ("{{ customer.name }}，回来看看吧"), and rendering
    them through the engine (a Context, a render context, a node per variable) costs more than
    the rest of a message put together. See ``_render_simple`` for why the result is the same.
    """
    parts, position = [], 0
    for match in _SIMPLE_VARIABLE.finditer(source):
        parts.append(source[position:match.start()])
        parts.append(tuple(match.group(1).split(".")))
        position = match.end()
    parts.append(source[position:])
    if any(isinstance(part, str) and ("{{" in part or "{%" in part or "{#" in part) for part in parts):
        return None
    return tuple(part for part in parts if part != "")


class _Fallback(Exception):
    pass


def _render_simple(parts, context: dict, autoescape: bool) -> str:
    """What the engine would output, for values that are plain ``str`` found by dict lookups.

    For such a value Django's ``render_value_in_context`` does nothing but ``str()`` (and
    ``conditional_escape`` with autoescape on, which for a non-safe ``str`` is ``escape``).
    Anything else — a missing name (which may be one of the engine's builtins such as ``True``),
    ``None``, a number, a date, a safe string, a non-dict on the path — raises ``_Fallback``
    and the engine renders the template, so the output never differs.
    """
    out = []
    for part in parts:
        if part.__class__ is str:
            out.append(part)
            continue
        value = context
        for key in part:
            if value.__class__ is not dict or key not in value:
                raise _Fallback
            value = value[key]
        if value.__class__ is not str:
            raise _Fallback
        out.append(escape(value) if autoescape else value)
    return SafeString("".join(out))  # mark_safe() of a str, without its lazy-argument wrapper


@functools.lru_cache(maxsize=512)
def _compile(source: str, autoescape: bool):
    """The compiled template and, when it is simple, its parts. Compiled once per process and
    source (templates are edited rarely; a changed source is a new key)."""
    engine = _HTML_ENGINE if autoescape else _TEXT_ENGINE
    return engine.from_string(source), _simple_parts(source)


def render_string(source: str, context: dict, *, autoescape: bool, field: str = "", zone=None) -> str:
    """Render one template string in the sandbox; raise ``TemplateRenderError`` on any failure.

    ``zone``: the time zone dates render in (the customer's). Only the engine can print a
    date, so only the engine path activates it (activating costs more than a simple render).
    """
    if not source:
        return ""
    try:
        template, parts = _compile(source, autoescape)
        if parts is not None:
            try:
                return _render_simple(parts, context, autoescape)
            except _Fallback:
                pass
        if zone is None:
            return template.render(Context(context, autoescape=autoescape))
        with timezone.override(zone):
            return template.render(Context(context, autoescape=autoescape))
    except Exception as exc:  # noqa: BLE001 - every failure of untrusted template code is the marketer's to fix
        raise TemplateRenderError(f"{type(exc).__name__}: {exc}", field=field) from exc


# Context ------------------------------------------------------------------------------------


def _first_name(name: str) -> str:
    # Western names: the first word. Chinese names carry no space and the family name comes
    # first; addressing someone by the bare given name is too familiar, so keep the full name.
    name = (name or "").strip()
    return name.split()[0] if name else ""


def _money(value) -> str:
    if value is None:
        return ""
    value = Decimal(value)
    return str(value.quantize(Decimal(1))) if value == value.to_integral_value() else f"{value:.2f}"


def offer_context(offer) -> dict:
    # Every grant of a run shares one Offer instance: build its context once per instance.
    cached = getattr(offer, "_render_context", None)
    if cached is None:
        cached = offer._render_context = _offer_context(offer)
    return cached


def _offer_context(offer) -> dict:
    currency = getattr(settings, "OFFER_CURRENCY_SYMBOL", "¥")
    if offer.discount_type == offer.DiscountType.PERCENT and offer.discount_value is not None:
        discount = f"{_money(offer.discount_value)}%"
    elif offer.discount_value is not None:
        discount = f"{currency}{_money(offer.discount_value)}"
    else:
        discount = ""
    return {
        "name": offer.name,
        "kind": offer.kind,
        "kind_display": offer.get_kind_display(),
        "description": offer.description,
        "discount": discount,
        "discount_type": offer.discount_type,
        "discount_value": _money(offer.discount_value),
        "min_spend": _money(offer.min_spend),
        "category": offer.category,
        "valid_days": offer.valid_days,
        "points": offer.points,
        "points_multiplier": (f"{offer.points_multiplier.normalize():f}" if offer.points_multiplier is not None else ""),
        "multiplier_days": offer.multiplier_days,
        "trial_plan": offer.trial_plan,
        "trial_days": offer.trial_days,
        "access_title": offer.access_title,
        "access_url": offer.access_url,
    }


# Every Customer field a message reads (the template context below, the recipient's display
# name, the time zone of dates and of the SMS window). The sending pipeline loads only these.
MESSAGE_CUSTOMER_FIELDS = ("name", "locale", "timezone", "favourite_category", "external_id")


def build_context(*, customer, campaign=None, grant=None, unsubscribe_url: str = "", preferences_url: str = "") -> dict:
    """The whole of what a template can see. Plain values only (see the module docstring)."""
    customer_data = {
        "name": customer.name,
        "first_name": _first_name(customer.name),
        "locale": customer.locale,
        "favourite_category": customer.favourite_category,
        "external_id": customer.external_id,
    }
    context = {
        "customer": customer_data,
        "brand": (campaign.brand if campaign is not None and campaign.brand else DEFAULT_BRAND),
        "favourite_category": customer.favourite_category,
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "grant": None,
        "offer": None,
    }
    if campaign is not None:
        context["campaign"] = {"name": campaign.name}
    if grant is not None:
        offer = grant.offer
        context["grant"] = {"code": grant.code or "", "expires_at": grant.expires_at, "description": offer.description}
        context["offer"] = offer_context(offer)
    return context


def _customer_timezone(customer):
    try:
        return ZoneInfo(customer.timezone) if customer.timezone else timezone.get_default_timezone()
    except (ZoneInfoNotFoundError, ValueError):
        return timezone.get_default_timezone()


# HTML to text -------------------------------------------------------------------------------

_BLOCK_TAGS = frozenset(
    {"p", "div", "table", "tr", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "section",
     "article", "header", "footer", "hr", "pre"}
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title"})


class _TextExtractor(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._links: list[tuple[str, int]] = []

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP_TAGS:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        if tag == "a":
            href = dict(attrs).get("href") or ""
            self._links.append((href, len(self.parts)))

    def handle_endtag(self, tag):
        if tag in _SKIP_TAGS:
            self._skip = max(0, self._skip - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n\n")
        elif tag == "a" and self._links:
            href, start = self._links.pop()
            label = "".join(self.parts[start:]).strip()
            # Keep the URL readable in the text part, once, unless the label already is it.
            if href and not href.startswith(("#", "javascript:")) and href != label:
                self.parts.append(f" ({href})" if label else href)

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Plain text from HTML: tags stripped, link URLs kept, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = unescape("".join(parser.parts)).replace("\xa0", " ")
    lines = [re.sub(r"[ \t\r\f\v]+", " ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# Rendering ----------------------------------------------------------------------------------


def _is_chinese(locale: str) -> bool:
    return (locale or "zh").lower().startswith("zh")


def _email_text_footer(*, locale: str, unsubscribe_url: str, preferences_url: str) -> str:
    if _is_chinese(locale):
        return f"\n\n--\n不想再收到此类邮件？退订：{unsubscribe_url}\n管理订阅偏好：{preferences_url}"
    return f"\n\n--\nUnsubscribe: {unsubscribe_url}\nEmail preferences: {preferences_url}"


def _render_fields(*, template, context: dict, channel: str, locale: str, zone=None) -> RenderedMessage:
    def text(field):
        return render_string(getattr(template, field), context, autoescape=False, field=field, zone=zone)

    def html(field):
        return render_string(getattr(template, field), context, autoescape=True, field=field, zone=zone)

    unsubscribe, preferences = context["unsubscribe_url"], context["preferences_url"]
    if channel == Channel.EMAIL:
        subject = _one_line(text("subject"))
        body_html = html("html_body")
        body_text = text("text_body").strip() if template.text_body.strip() else html_to_text(body_html)
        document = render_to_string(
            "campaigns/email/layout.html",
            {
                "subject": subject,
                "body_html": mark_safe(body_html),  # rendered by the sandbox with autoescape on
                "brand": context["brand"],
                "unsubscribe_url": unsubscribe,
                "preferences_url": preferences,
                "chinese": _is_chinese(locale),
            },
        )
        footer = _email_text_footer(locale=locale, unsubscribe_url=unsubscribe, preferences_url=preferences)
        return RenderedMessage(subject=subject, html=document, text=body_text + footer,
                               unsubscribe_url=unsubscribe, preferences_url=preferences)
    if channel == Channel.SMS:
        return RenderedMessage(text=text("sms_text").strip(), unsubscribe_url=unsubscribe, preferences_url=preferences)
    if channel == Channel.IN_APP:
        return RenderedMessage(
            title=_one_line(text("title")), body=text("body").strip(), deep_link=text("deep_link").strip(),
            unsubscribe_url=unsubscribe, preferences_url=preferences,
        )
    raise TemplateRenderError(f"Unknown channel {channel!r}.", field="channel")


_TOKEN_PLACEHOLDER = "TOKEN0PLACEHOLDER"


@functools.lru_cache(maxsize=16)
def _link_patterns(site_url: str, urlconf) -> tuple[str, str]:
    """The absolute unsubscribe and preferences URLs with ``%s`` where the token goes.

    Tokens are made of [A-Za-z0-9_-:], which reverse() leaves unquoted, so substituting the
    token into a reversed placeholder gives exactly SITE_URL + reverse(name, args=[token]).
    """
    def pattern(name):
        path = reverse(name, args=[_TOKEN_PLACEHOLDER], urlconf=urlconf)
        return (site_url + path).replace("%", "%%").replace(_TOKEN_PLACEHOLDER, "%s")

    return pattern("consent:unsubscribe"), pattern("consent:preferences")


def preview_urls(channel: str) -> tuple[str, str]:
    """Links for previews and test sends: the real URL shape, but no customer can be unsubscribed by them."""
    base = settings.SITE_URL.rstrip("/")
    return f"{base}/consent/unsubscribe/preview-{channel}/", f"{base}/consent/preferences/preview-{channel}/"


def render_message(*, template, customer, campaign=None, grant=None, channel=None, preview: bool = False) -> RenderedMessage:
    """Render ``template`` for ``customer``; raise ``TemplateRenderError`` if it cannot be rendered.

    ``channel`` defaults to the template's. ``preview=True`` (admin preview, test sends) uses
    inert unsubscribe links so that a marketer clicking them unsubscribes nobody. Dates render
    in the customer's time zone.
    """
    channel = channel or template.channel
    if preview or customer.pk is None:
        unsubscribe, preferences = preview_urls(channel)
    else:
        # Same URLs as core.tokens.unsubscribe_url/preferences_url, one token for both and no
        # reverse() per message (reverse is a third of the cost of rendering an in-app message).
        token = tokens.unsubscribe_token_make(customer_id=customer.pk, channel=channel)
        unsubscribe, preferences = _link_patterns(settings.SITE_URL, get_urlconf() or settings.ROOT_URLCONF)
        unsubscribe, preferences = unsubscribe % token, preferences % token
    context = build_context(
        customer=customer, campaign=campaign, grant=grant, unsubscribe_url=unsubscribe, preferences_url=preferences
    )
    return _render_fields(template=template, context=context, channel=channel, locale=customer.locale,
                          zone=_customer_timezone(customer))


# Starting points --------------------------------------------------------------------------

# The playbook's three email subject styles, offered in the admin as templates to start from.
EMAIL_STARTING_POINTS = {
    "nostalgic": {
        "label": "Nostalgic: 想你了！",
        "subject": "想你了！{{ brand }} 期待与您重逢",
        "html_body": (
            "<p>{{ customer.name }}，好久不见！</p>\n"
            "<p>{{ brand }} 一直记得你。{% if favourite_category %}你喜欢的{{ favourite_category }}上新了，{% endif %}回来看看吧。</p>\n"
            "{% if grant %}<p>为你准备了 {{ offer.discount }} 优惠券：<strong>{{ grant.code }}</strong>"
            "{% if grant.expires_at %}（{{ grant.expires_at|date:\"Y-m-d\" }} 前有效）{% endif %}</p>{% endif %}"
        ),
    },
    "offer": {
        "label": "Offer: 专属惊喜",
        "subject": "{{ brand }} 为你准备了一份专属惊喜，点击领取！",
        "html_body": (
            "<p>{{ customer.name }}，你好！</p>\n"
            "{% if grant %}<p>{{ offer.description|default:offer.name }}</p>\n"
            "<p>你的专属优惠码：<strong>{{ grant.code }}</strong>"
            "{% if offer.min_spend %}（满{{ offer.min_spend }}可用）{% endif %}"
            "{% if grant.expires_at %}，{{ grant.expires_at|date:\"Y-m-d\" }} 前有效{% endif %}。</p>"
            "{% else %}<p>{{ brand }} 为你准备了新品与好物，快来看看。</p>{% endif %}"
        ),
    },
    "question": {
        "label": "Question: 最近还好吗？",
        "subject": "最近还好吗？{{ brand }} 想知道您为什么离开了我们",
        "html_body": (
            "<p>{{ customer.name }}，最近还好吗？</p>\n"
            "<p>我们注意到你有一段时间没来 {{ brand }} 了。能告诉我们原因吗？你的回答会让我们变得更好。</p>\n"
            "{% if grant %}<p>作为感谢，送你一张优惠券：<strong>{{ grant.code }}</strong></p>{% endif %}"
        ),
    },
}


# Validation ---------------------------------------------------------------------------------

REQUIRED_FIELDS = {
    Channel.EMAIL: ("subject", "html_body"),
    Channel.SMS: ("sms_text",),
    Channel.IN_APP: ("title", "body"),
}


def sample_customer():
    from reactivation.models import Customer

    return Customer(
        external_id="SAMPLE-0001", name="张伟", locale="zh-hans", timezone="Asia/Shanghai", favourite_category="美妆"
    )


def sample_offer():
    from campaigns.models import Offer

    return Offer(
        name="示例优惠券", kind=Offer.Kind.COUPON, description="满100减20", discount_type=Offer.DiscountType.AMOUNT,
        discount_value=Decimal("20"), min_spend=Decimal("100"), valid_days=14,
    )


def sample_grant(offer):
    """An unsaved grant for previews: a recognisably fake code, the offer's real validity."""
    from campaigns.models import OfferGrant

    now = timezone.now()
    days = offer.valid_days or offer.multiplier_days
    return OfferGrant(
        offer=offer, code="SAMP-LE23-CODE" if offer.kind == offer.Kind.COUPON else None, granted_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )


def validate_template(*, template, campaign=None, offer=None) -> RenderedMessage:
    """Render ``template`` for a sample customer (with a sample grant when an offer is given).

    Raises ``TemplateRenderError`` naming the field that is missing or fails to render. The
    admin form calls it in ``clean`` so a broken template is refused on save.
    """
    for field in REQUIRED_FIELDS.get(template.channel, ()):
        if not (getattr(template, field) or "").strip():
            raise TemplateRenderError("This field is required for this channel.", field=field)
    customer = sample_customer()
    # Once without an offer (budget exhausted) and once with one, so both sides of
    # ``{% if grant %}`` are compiled and rendered.
    render_message(template=template, customer=customer, campaign=campaign, grant=None, preview=True)
    grant = sample_grant(offer if offer is not None else sample_offer())
    return render_message(template=template, customer=customer, campaign=campaign, grant=grant, preview=True)
