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
from django.core.exceptions import ValidationError
from django.template import Context, Engine, Library
from django.template import defaultfilters, defaulttags
from django.template.base import VariableNode
from django.template.loader import render_to_string
from django.urls import get_urlconf, reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from campaigns.links import claim_url as grant_claim_url
from campaigns.links import shop_link
from campaigns.models import (
    TEMPLATE_CONTENT_FIELDS,
    Brand,
    Campaign,
    MessageLanguage,
    MessageTemplate,
    Offer,
    OfferGrant,
    message_language,
)
from campaigns.offer_copy import offer_headline
from campaigns.selectors import campaigns_using
from consent.models import Channel
from core import tokens
from reactivation.categories import category_label
from reactivation.models import Customer

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

    def __init__(self, message: str, *, field: str = "", variable: str = "", channel: str = ""):
        super().__init__(message)
        self.field = field
        self.message = message
        self.variable = variable
        self.channel = channel

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
    language: str = ""  # of the variant rendered ("zh-hans", "en"): the SMS opt-out text follows it


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


# Filters with which a template says "an empty value is fine here" ({{ x|default:"" }}).
# (Not default_if_none: a missing variable resolves to "", never None, so it would print nothing.)
_EMPTY_ALLOWED_FILTERS = frozenset({"default", "yesno"})


class _StrictVariableNode(VariableNode):
    """``{{ variable }}`` that refuses to print nothing or "None".

    A message that reads "会员免费试用None天" or "为你准备了 优惠券：" is worse than no message:
    a variable the context does not have (an offer field this kind of offer lacks, a typo) or
    that has no value raises instead, naming the variable. ``{% if %}`` conditions are not
    variable nodes, so ``{% if grant.code %}…{% endif %}`` still guards what may be missing,
    and ``|default:…`` says explicitly what to print instead.
    """

    def render(self, context):
        output = self.filter_expression.resolve(context)
        if output is None or (isinstance(output, str) and not output.strip()):
            if not any(func.__name__ in _EMPTY_ALLOWED_FILTERS for func, _args in self.filter_expression.filters):
                raise UndefinedVariable(self._name())
        if isinstance(output, (dict, list, tuple)):  # {{ offer }} would print a Python repr
            raise UndefinedVariable(self._name(), reason="is a group of values, not one")
        return super().render(context)

    def _name(self) -> str:
        """The variable without its filters ("offer.trial_days"), as the marketer looks for it."""
        return str(getattr(self.filter_expression.var, "var", self.filter_expression.token))


class UndefinedVariable(Exception):
    """A ``{{ variable }}`` with no value in this message's context."""

    def __init__(self, variable: str, *, reason: str = "has no value here"):
        super().__init__(f"{{{{ {variable} }}}} {reason}")
        self.variable = variable


def _make_strict(nodelist) -> None:
    for node in nodelist.get_nodes_by_type(VariableNode):
        node.__class__ = _StrictVariableNode


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
        if value.__class__ is not str or not value.strip():  # the engine refuses an empty value
            raise _Fallback
        out.append(escape(value) if autoescape else value)
    return SafeString("".join(out))  # mark_safe() of a str, without its lazy-argument wrapper


@functools.lru_cache(maxsize=512)
def _compile(source: str, autoescape: bool):
    """The compiled template and, when it is simple, its parts. Compiled once per process and
    source (templates are edited rarely; a changed source is a new key)."""
    engine = _HTML_ENGINE if autoescape else _TEXT_ENGINE
    template = engine.from_string(source)
    _make_strict(template.nodelist)
    return template, _simple_parts(source)


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
    except UndefinedVariable as exc:
        raise TemplateRenderError(str(exc), field=field, variable=exc.variable) from exc
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


def offer_context(offer, language: str = MessageLanguage.ZH_HANS) -> dict:
    # Every grant of a run shares one Offer instance: build its context once per instance and language.
    cached = getattr(offer, "_render_contexts", None)
    if cached is None:
        cached = offer._render_contexts = {}
    if language not in cached:
        cached[language] = _offer_context(offer, language)
    return cached[language]


def _offer_context(offer, language: str) -> dict:
    """The offer's fields that have a value, and nothing else: a template printing a field this
    kind of offer lacks ({{ offer.trial_days }} on a coupon) is refused, not rendered as "None"."""
    currency = getattr(settings, "OFFER_CURRENCY_SYMBOL", "¥")
    if offer.discount_type == offer.DiscountType.PERCENT and offer.discount_value is not None:
        discount = f"{_money(offer.discount_value)}%"
    elif offer.discount_value is not None:
        discount = f"{currency}{_money(offer.discount_value)}"
    else:
        discount = ""
    values = {
        "name": offer.name,
        "kind": offer.kind,
        "kind_display": offer.get_kind_display(),
        "headline": offer_headline(offer, language),
        "description": offer.description,
        "discount": discount,
        "discount_type": offer.discount_type,
        "discount_value": _money(offer.discount_value),
        "min_spend": _money(offer.min_spend),
        "category": category_label(offer.category, language),
        "valid_days": offer.valid_days,
        "points": offer.points,
        "points_multiplier": (f"{offer.points_multiplier.normalize():f}" if offer.points_multiplier is not None else ""),
        "multiplier_days": offer.multiplier_days,
        "trial_plan": offer.trial_plan,
        "trial_days": offer.trial_days,
        "access_title": offer.access_title,
        "access_url": offer.access_url,
    }
    return {key: value for key, value in values.items() if value not in (None, "")}


# Every Customer field a message reads (the template context below, the recipient's display
# name, the time zone of dates and of the SMS window). The sending pipeline loads only these.
MESSAGE_CUSTOMER_FIELDS = ("name", "locale", "timezone", "favourite_category", "external_id")

# How a message addresses a customer whose name is unknown.
NAMELESS = {MessageLanguage.ZH_HANS: "亲爱的顾客", MessageLanguage.EN: "there"}


def build_context(*, customer, campaign=None, grant=None, unsubscribe_url: str = "", preferences_url: str = "",
                  language: str = MessageLanguage.ZH_HANS, channel: str = Channel.EMAIL, claim_url: str = "") -> dict:
    """The whole of what a template can see. Plain values only (see the module docstring).

    ``language`` is the language of the message (the template variant chosen); the category
    and offer texts follow it. A value that is missing is absent, never None (see
    ``_StrictVariableNode``).
    """
    name = (customer.name or "").strip()
    category = category_label(customer.favourite_category, language)
    customer_data = {
        "name": name or NAMELESS[language],
        "first_name": _first_name(name) or NAMELESS[language],
        "locale": customer.locale,
        "favourite_category": category,
        "external_id": customer.external_id,
    }
    brand = getattr(campaign, "brand", None)
    context = {
        "customer": customer_data,
        "brand": brand.name if brand is not None else DEFAULT_BRAND,
        "favourite_category": category,
        "unsubscribe_url": unsubscribe_url,
        "preferences_url": preferences_url,
        "grant": None,
        "offer": None,
    }
    if brand is not None and brand.shop_url:
        context["shop_url"] = shop_link(url=brand.shop_url, channel=channel, campaign_name=campaign.name)
    if campaign is not None:
        context["campaign"] = {"name": campaign.name}
    if grant is not None:
        offer = grant.offer
        # "kind" keeps the dict truthy for offers without a code or expiry ({% if grant %}).
        grant_data = {"kind": offer.kind, "code": grant.code, "expires_at": grant.expires_at,
                      "description": offer.description}
        context["grant"] = {key: value for key, value in grant_data.items() if value not in (None, "")}
        context["offer"] = offer_context(offer, language)
        if claim_url:
            context["claim_url"] = claim_url
    return {key: value for key, value in context.items() if value not in (None, "")}


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


# What the layout says around a message, per language. Kept here rather than in gettext
# catalogs: a message's language is the customer's, not the active request's.
LAYOUT_STRINGS = {
    MessageLanguage.ZH_HANS: {
        "html_lang": "zh-CN",
        "claim": "立即领取",
        "visit": "去{brand}逛逛",
        "why": "您收到这封邮件，是因为您曾同意接收 {brand} 的营销信息。",
        "unsubscribe": "退订",
        "preferences": "管理订阅偏好",
        "text_claim": "领取优惠：{url}",
        "text_visit": "去{brand}逛逛：{url}",
        "text_unsubscribe": "不想再收到此类邮件？退订：{url}",
        "text_preferences": "管理订阅偏好：{url}",
        "sms_claim": "领取：{url}",
    },
    MessageLanguage.EN: {
        "html_lang": "en",
        "claim": "Claim your offer",
        "visit": "Visit {brand}",
        "why": "You receive this email because you agreed to hear from {brand}.",
        "unsubscribe": "Unsubscribe",
        "preferences": "Email preferences",
        "text_claim": "Claim your offer: {url}",
        "text_visit": "Visit {brand}: {url}",
        "text_unsubscribe": "Unsubscribe: {url}",
        "text_preferences": "Email preferences: {url}",
        "sms_claim": "Claim: {url}",
    },
}


def _email_text_footer(*, strings: dict, unsubscribe_url: str, preferences_url: str, postal_address: str) -> str:
    lines = ["", "", "--"]
    lines += [line.strip() for line in postal_address.splitlines() if line.strip()]
    lines += [strings["text_unsubscribe"].format(url=unsubscribe_url),
              strings["text_preferences"].format(url=preferences_url)]
    return "\n".join(lines)


_SENTENCE_END = frozenset("。！？!?.…")


def _sentence_ended(text: str, language: str) -> str:
    """``text`` ending a sentence, so what follows starts a new one."""
    if not text or text[-1] in _SENTENCE_END:
        return text
    return text + ("." if language == MessageLanguage.EN else "。")


def _call_to_action(*, context: dict, strings: dict) -> tuple[str, str]:
    """(label, url) of the message's one button: the claim page when it carries an offer,
    else the brand's shop; ("", "") when there is neither."""
    if context.get("claim_url"):
        return strings["claim"], context["claim_url"]
    if context.get("shop_url"):
        return strings["visit"].format(brand=context["brand"]), context["shop_url"]
    return "", ""


def _render_fields(*, content, context: dict, channel: str, language: str, brand=None, zone=None) -> RenderedMessage:
    def text(field):
        return render_string(getattr(content, field), context, autoescape=False, field=field, zone=zone)

    def html(field):
        return render_string(getattr(content, field), context, autoescape=True, field=field, zone=zone)

    strings = LAYOUT_STRINGS[language]
    unsubscribe, preferences = context["unsubscribe_url"], context["preferences_url"]
    claim = context.get("claim_url", "")
    if channel == Channel.EMAIL:
        subject = _one_line(text("subject"))
        body_html = html("html_body")
        body_text = text("text_body").strip() if content.text_body.strip() else html_to_text(body_html)
        cta_label, cta_url = _call_to_action(context=context, strings=strings)
        postal_address = brand.postal_address.strip() if brand is not None else ""
        document = render_to_string(
            "campaigns/email/layout.html",
            {
                "subject": subject,
                "body_html": mark_safe(body_html),  # rendered by the sandbox with autoescape on
                "brand": context["brand"],
                "logo_url": brand.logo_url if brand is not None else "",
                "home_url": context.get("shop_url", ""),
                "cta_label": cta_label,
                "cta_url": cta_url,
                "why": strings["why"].format(brand=context["brand"]),
                "postal_address": postal_address,
                "unsubscribe_url": unsubscribe,
                "preferences_url": preferences,
                "t": strings,
            },
        )
        if cta_url and cta_url not in body_text:
            key = "text_claim" if claim else "text_visit"
            body_text += "\n\n" + strings[key].format(url=cta_url, brand=context["brand"])
        footer = _email_text_footer(strings=strings, unsubscribe_url=unsubscribe, preferences_url=preferences,
                                    postal_address=postal_address)
        return RenderedMessage(subject=subject, html=document, text=body_text + footer,
                               unsubscribe_url=unsubscribe, preferences_url=preferences, language=language)
    if channel == Channel.SMS:
        body = text("sms_text").strip()
        if claim and claim not in body:
            # A link glued to the next words is not tappable on many phones: spaces around it.
            body = f"{_sentence_ended(body, language)} {strings['sms_claim'].format(url=claim)} "
        return RenderedMessage(text=body, unsubscribe_url=unsubscribe, preferences_url=preferences, language=language)
    if channel == Channel.IN_APP:
        deep_link = text("deep_link").strip()
        if claim and claim not in deep_link:
            deep_link = claim  # a message with an offer opens its claim page
        return RenderedMessage(
            title=_one_line(text("title")), body=text("body").strip(), deep_link=deep_link,
            unsubscribe_url=unsubscribe, preferences_url=preferences, language=language,
        )
    raise TemplateRenderError(f"Unknown channel {channel!r}.", field="channel")


def template_variant(template, *, language: str | None, brand=None):
    """(content, language): the template's content in ``language`` when it has that variant,
    else in the brand's default language, else the template's own. ``content`` has the
    template's content fields (the template itself or one of its translations).

    Reads ``template.translations.all()``: the sending pipeline prefetches them per batch.
    """
    variants = {template.locale: template}
    if template.pk is not None:
        variants.update({t.locale: t for t in template.translations.all()})
    for wanted in (language, getattr(brand, "default_locale", None)):
        if wanted in variants:
            return variants[wanted], wanted
    return template, template.locale


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


def render_message(*, template, customer, campaign=None, grant=None, channel=None, preview: bool = False,
                   language: str | None = None) -> RenderedMessage:
    """Render ``template`` for ``customer``; raise ``TemplateRenderError`` if it cannot be rendered.

    The variant is the customer's language (``language`` forces one), else the campaign
    brand's default, else the template's own; the layout, footer and offer texts follow the
    variant, so a message never mixes languages. ``channel`` defaults to the template's.
    ``preview=True`` (admin preview, test sends) uses inert unsubscribe links so that a
    marketer clicking them unsubscribes nobody. Dates render in the customer's time zone.
    """
    channel = channel or template.channel
    brand = getattr(campaign, "brand", None)
    content, language = template_variant(
        template, language=language or message_language(customer.locale), brand=brand
    )
    if preview or customer.pk is None:
        unsubscribe, preferences = preview_urls(channel)
    else:
        # Same URLs as core.tokens.unsubscribe_url/preferences_url, one token for both and no
        # reverse() per message (reverse is a third of the cost of rendering an in-app message).
        token = tokens.unsubscribe_token_make(customer_id=customer.pk, channel=channel, language=language)
        unsubscribe, preferences = _link_patterns(settings.SITE_URL, get_urlconf() or settings.ROOT_URLCONF)
        unsubscribe, preferences = unsubscribe % token, preferences % token
    claim = ""
    if grant is not None:
        claim = grant_claim_url(grant_id=grant.pk) if grant.pk is not None else preview_claim_url()
    context = build_context(
        customer=customer, campaign=campaign, grant=grant, unsubscribe_url=unsubscribe, preferences_url=preferences,
        language=language, channel=channel, claim_url=claim,
    )
    try:
        return _render_fields(content=content, context=context, channel=channel, language=language, brand=brand,
                              zone=_customer_timezone(customer))
    except TemplateRenderError as exc:
        exc.channel = channel
        raise


def preview_claim_url() -> str:
    """The claim link of a sample grant (previews): the real URL shape, no real grant."""
    return f"{settings.SITE_URL.rstrip('/')}/offers/claim/preview/"


# Starting points --------------------------------------------------------------------------

# The playbook's three email subject styles, offered in the admin as templates to start from,
# each with its English variant. The offer block works for every kind of offer: the headline
# says what it is, the code and the expiry show only when the grant has them, and the layout
# adds the button to the claim page. The code sits in its own block, spaced from the text
# (a code pressed against CJK punctuation inside <strong> reads as obfuscation to spam filters).
_OFFER_BLOCK_ZH = (
    "{% if grant %}<p style=\"margin:20px 0 4px;\">为你准备了：{{ offer.headline }}</p>\n"
    "{% if grant.code %}<p style=\"margin:0; font-size:20px; letter-spacing:2px; font-family:Menlo, Consolas, monospace;\">"
    "{{ grant.code }}</p>\n{% endif %}"
    "{% if grant.expires_at %}<p style=\"margin:4px 0 0; color:#6b7280; font-size:14px;\">有效期至 {{ grant.expires_at|date:\"Y-m-d\" }}</p>{% endif %}"
    "{% endif %}"
)
_OFFER_BLOCK_EN = (
    "{% if grant %}<p style=\"margin:20px 0 4px;\">Waiting for you: {{ offer.headline }}</p>\n"
    "{% if grant.code %}<p style=\"margin:0; font-size:20px; letter-spacing:2px; font-family:Menlo, Consolas, monospace;\">"
    "{{ grant.code }}</p>\n{% endif %}"
    "{% if grant.expires_at %}<p style=\"margin:4px 0 0; color:#6b7280; font-size:14px;\">Valid until {{ grant.expires_at|date:\"j M Y\" }}</p>{% endif %}"
    "{% endif %}"
)

EMAIL_STARTING_POINTS = {
    "nostalgic": {
        "label": "Nostalgic: 想你了！",
        "subject": "想你了！{{ brand }} 期待与您重逢",
        "html_body": (
            "<p>{{ customer.name }}，好久不见！</p>\n"
            "<p>{{ brand }} 一直记得你。{% if favourite_category %}你喜欢的{{ favourite_category }}上新了，{% endif %}回来看看吧。</p>\n"
            + _OFFER_BLOCK_ZH
        ),
        "en": {
            "subject": "We miss you! {{ brand }} would love to see you again",
            "html_body": (
                "<p>Hi {{ customer.first_name }}, it has been a while!</p>\n"
                "<p>{{ brand }} has not forgotten you.{% if favourite_category %} There is new {{ favourite_category }} "
                "waiting for you.{% endif %} Come and have a look.</p>\n"
                + _OFFER_BLOCK_EN
            ),
        },
    },
    "offer": {
        "label": "Offer: 专属惊喜",
        "subject": "{{ brand }} 为你准备了一份专属惊喜，点击领取！",
        "html_body": (
            "<p>{{ customer.name }}，你好！</p>\n"
            "<p>好久没见到你了，{{ brand }} 为你准备了一份专属惊喜。</p>\n"
            + _OFFER_BLOCK_ZH
            + "{% if not grant %}<p>新品与好物都在等你，快来看看。</p>{% endif %}"
        ),
        "en": {
            "subject": "{{ brand }} has a surprise just for you",
            "html_body": (
                "<p>Hi {{ customer.first_name }},</p>\n"
                "<p>We have not seen you for a while, so {{ brand }} has put something aside for you.</p>\n"
                + _OFFER_BLOCK_EN
                + "{% if not grant %}<p>New arrivals and favourites are waiting for you.</p>{% endif %}"
            ),
        },
    },
    "question": {
        "label": "Question: 最近还好吗？",
        "subject": "最近还好吗？{{ brand }} 想知道您为什么离开了我们",
        "html_body": (
            "<p>{{ customer.name }}，最近还好吗？</p>\n"
            "<p>我们注意到你有一段时间没来 {{ brand }} 了。能告诉我们原因吗？直接回复这封邮件就好，你的回答会让我们变得更好。</p>\n"
            + _OFFER_BLOCK_ZH
        ),
        "en": {
            "subject": "How are you? {{ brand }} would like to know why you left",
            "html_body": (
                "<p>Hi {{ customer.first_name }}, how are you?</p>\n"
                "<p>We noticed you have not visited {{ brand }} for a while. Could you tell us why? Just reply to this "
                "email: your answer helps us do better.</p>\n"
                + _OFFER_BLOCK_EN
            ),
        },
    },
}


# Validation ---------------------------------------------------------------------------------

REQUIRED_FIELDS = {
    Channel.EMAIL: ("subject", "html_body"),
    Channel.SMS: ("sms_text",),
    Channel.IN_APP: ("title", "body"),
}


def sample_customer(language: str = MessageLanguage.ZH_HANS):
    if language == MessageLanguage.EN:
        return Customer(external_id="SAMPLE-0001", name="Emma Clarke", locale="en", timezone="Europe/London",
                        favourite_category="beauty")
    return Customer(
        external_id="SAMPLE-0001", name="张伟", locale="zh-hans", timezone="Asia/Shanghai", favourite_category="beauty"
    )


def sample_offers() -> list:
    """One sample offer of each kind, as a marketer would fill it in."""
    return [
        Offer(name="示例优惠券", kind=Offer.Kind.COUPON, description="满100减20", discount_type=Offer.DiscountType.AMOUNT,
              discount_value=Decimal("20"), min_spend=Decimal("100"), valid_days=14),
        Offer(name="示例双倍积分", kind=Offer.Kind.POINTS, description="7天双倍积分", points_multiplier=Decimal("2"),
              multiplier_days=7),
        Offer(name="示例免费试用", kind=Offer.Kind.FREE_TRIAL, description="会员免费试用14天", trial_plan="Plus",
              trial_days=14),
        Offer(name="示例专属活动", kind=Offer.Kind.EXCLUSIVE_ACCESS, description="会员专场抢先看",
              access_title="会员专场", access_url="https://example.com/members"),
    ]


def sample_offer():
    return sample_offers()[0]


def sample_grant(offer):
    """An unsaved grant for previews: a recognisably fake code, the offer's real validity."""
    now = timezone.now()
    days = offer.valid_days or offer.multiplier_days
    return OfferGrant(
        offer=offer, code="SAMP-LE23-CODE" if offer.kind == offer.Kind.COUPON else None, granted_at=now,
        expires_at=now + timedelta(days=days) if days else None,
    )


def _variants(template, translations=None) -> list:
    """The template and its translations (``translations`` when given: unsaved admin inlines)."""
    if translations is None:
        translations = list(template.translations.all()) if template.pk is not None else []
    return [template, *translations]


def _check_required(content, channel: str) -> None:
    for field in REQUIRED_FIELDS.get(channel, ()):
        if not (getattr(content, field) or "").strip():
            raise TemplateRenderError("This field is required for this channel.", field=field, channel=channel)


def sample_campaign() -> Campaign:
    """A campaign and brand for checking a template on its own: {{ shop_url }} and
    {{ campaign.name }} have values, as they will in any campaign."""
    brand = Brand(name="示例品牌", sms_signature="示例品牌", postal_address="示例地址", shop_url="https://example.com/")
    return Campaign(name="Sample campaign", brand=brand)


def _render_variant(*, template, content, campaign, grant, offer_note: str = "") -> RenderedMessage:
    """Render for a full sample customer, then for one with nothing but an id: a variable that
    only some customers have ({{ favourite_category }}) must be guarded, or the message fails
    at send time for every customer without it."""
    language = content.locale
    campaign = campaign if campaign is not None else sample_campaign()
    try:
        message = render_message(template=template, customer=sample_customer(language), campaign=campaign,
                                 grant=grant, preview=True, language=language)
        bare = Customer(external_id="SAMPLE-0002")
        render_message(template=template, customer=bare, campaign=campaign, grant=grant, preview=True, language=language)
        return message
    except TemplateRenderError as exc:
        where = f"{dict(MessageLanguage.choices).get(language, language)} variant"
        exc.message = f"{exc.message} ({where}{offer_note})"
        raise


def validate_template(*, template, campaign=None, offer=None, translations=None) -> RenderedMessage:
    """Render every language variant of ``template`` as the pipeline would, for a sample customer.

    - Each variant must have the fields its channel needs.
    - Without an offer: rendered once, as when the offer budget ran out.
    - With ``offer`` (or the campaign's): rendered with a sample grant of that offer, so a
      variable that offer does not have ({{ offer.trial_days }} on a coupon) is refused.
    - With neither a campaign nor an offer (saving a template on its own): it must render with
      a sample offer of at least one kind; the campaigns it is used in are checked against
      their own offers (``validate_campaign_templates``).

    Raises ``TemplateRenderError`` naming the field, the variable, the channel and the variant.
    The admin calls it on save; a campaign's launch calls ``validate_campaign_templates``.
    """
    channel = template.channel
    variants = _variants(template, translations)
    for content in variants:
        _check_required(content, channel)
    if offer is None and campaign is not None:
        offer = campaign.offer
    # A variant is picked by its ``locale``: render each one with that language forced.
    message = None
    for content in variants:
        variant_template = _as_template(template, content)
        if campaign is None and offer is None:
            message = _render_any_offer(template=variant_template, content=content)
            continue
        if offer is None or campaign is None or campaign.when_budget_exhausted == Campaign.WhenBudgetExhausted.SEND_WITHOUT_OFFER:
            note = ", when the offer's budget has run out and the message goes without it" if offer is not None else ""
            message = _render_variant(template=variant_template, content=content, campaign=campaign, grant=None,
                                      offer_note=note)
        if offer is not None:
            message = _render_variant(template=variant_template, content=content, campaign=campaign,
                                      grant=sample_grant(offer), offer_note=f", offer “{offer.name}”")
    return message


def _render_any_offer(*, template, content) -> RenderedMessage:
    """A template saved on its own does not know its offer yet. It must render without a grant
    (as when a budget runs out) except for variables that only a grant gives, and with a
    sample grant of at least one kind of offer; each campaign using it is then checked against
    its own offer (``validate_campaign_templates``), where a missing variable is refused."""
    try:
        _render_variant(template=template, content=content, campaign=None, grant=None)
    except TemplateRenderError as exc:
        if not exc.variable:
            raise
    errors = []
    for offer in sample_offers():
        try:
            return _render_variant(template=template, content=content, campaign=None, grant=sample_grant(offer))
        except TemplateRenderError as exc:
            errors.append(exc)
    raise errors[0]


def _as_template(template, content):
    """An unsaved template with ``content``'s fields and language: one variant, rendered alone."""
    if content is template and template.pk is None:
        return template
    return MessageTemplate(name=template.name, channel=template.channel, locale=content.locale,
                           **{field: getattr(content, field) for field in TEMPLATE_CONTENT_FIELDS})


def validate_template_in_use(*, candidate, saved=None, translations=None) -> RenderedMessage:
    """What saving a template checks (admin form, import): ``candidate`` renders on its own,
    and with the offer of every campaign that already sends ``saved`` (the stored template it
    replaces): a template edited after its campaign was saved must not start printing a field
    that campaign's offer lacks."""
    message = validate_template(template=candidate, translations=translations)
    if saved is not None and saved.pk is not None:
        for campaign in campaigns_using(template=saved):
            validate_template(template=candidate, campaign=campaign, translations=translations)
    return message


def validate_campaign_templates(*, campaign) -> None:
    """The campaign's brand, and every template of every channel, in every language, with its offer.

    Raises ``django.core.exceptions.ValidationError`` keyed by field ("brand",
    "email_template"...), naming what is missing: a brand without the postal address email
    needs or the shop the button leads to, a variable with no value and its channel.
    """
    errors = {}
    brand = campaign.brand if campaign.brand_id is not None else None
    if brand is None:
        errors["brand"] = "Choose the brand the messages come from."
    else:
        try:
            brand.full_clean()
        except ValidationError as exc:
            fields = ", ".join(str(Brand._meta.get_field(name).verbose_name) for name in exc.message_dict)
            errors["brand"] = f"Complete the brand “{brand}” before sending: {fields}."
    for channel in campaign.channels or []:
        template = getattr(campaign, f"{channel}_template", None)
        if template is None or brand is None:
            continue
        try:
            validate_template(template=template, campaign=campaign)
        except TemplateRenderError as exc:
            errors[f"{channel}_template"] = (
                f"The {channel} template “{template.name}” cannot be sent with this campaign: {exc}"
            )
    if errors:
        raise ValidationError(errors)
