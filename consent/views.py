"""Public opt-out pages and the SMS webhook: parse the request, call consent.services.

Pages are in the customer's language (``customer.locale``: zh-* is Chinese, anything else
English) from the small string table below rather than gettext, so they do not depend on
compiled catalogs being present on the server.
"""

import hashlib
import hmac
import logging
from datetime import timedelta
from urllib.parse import parse_qsl

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods, require_POST

from consent import services
from consent.forms import PreferencesForm
from consent.keywords import SmsIntent, sms_intent
from consent.models import Channel, ConsentState, Source, Suppression
from core.masking import mask_email, mask_phone
from core.time_bounds import time_bounds_problem, time_parse
from core.tokens import BadToken, unsubscribe_token_read
from reactivation.models import Customer

logger = logging.getLogger(__name__)

ONE_CLICK_FIELD, ONE_CLICK_VALUE = "List-Unsubscribe", "One-Click"

STRINGS = {
    "en": {
        "lang": "en",
        "title": "Unsubscribe",
        "prefs_title": "Message preferences",
        "channel_email": "Marketing emails",
        "channel_sms": "Marketing text messages (SMS)",
        "channel_in_app": "Messages in the app",
        "confirm_question": "Stop receiving {channel}?",
        "confirm_to": "Sent to {address}.",
        "confirm_button": "Unsubscribe",
        "already_withdrawn": "You are already unsubscribed from {channel}. You can still confirm again.",
        "done_title": "You are unsubscribed",
        "done_text": "You will no longer receive {channel} from us. It takes effect immediately.",
        "prefs_link": "Manage all your message preferences",
        "prefs_intro": "Choose which marketing messages you want to receive.",
        "prefs_save": "Save my choices",
        "prefs_saved": "Your choices are saved.",
        "prefs_unchanged": "Nothing changed.",
        "prefs_confirm_others": "I also want messages on the other channels I ticked (this link was sent to one only).",
        "prefs_confirm_needed": "This link was sent by {channel}. To receive {{channels}} too, tick the confirmation below the choices.",
        "no_address": "no address on file",
        "suppressed": "Messages to {address} stay blocked because this address bounced or reported spam.",
        "one_click_done": "You are unsubscribed.",
    },
    "zh-hans": {
        "lang": "zh-CN",
        "title": "退订",
        "prefs_title": "消息偏好设置",
        "channel_email": "营销邮件",
        "channel_sms": "营销短信",
        "channel_in_app": "应用内消息",
        "confirm_question": "确定不再接收{channel}吗？",
        "confirm_to": "接收地址：{address}",
        "confirm_button": "确认退订",
        "already_withdrawn": "您已退订{channel}。如需要，可以再次确认。",
        "done_title": "退订成功",
        "done_text": "您将不再收到我们的{channel}，立即生效。",
        "prefs_link": "管理全部消息偏好",
        "prefs_intro": "请选择您希望接收的营销消息。",
        "prefs_save": "保存设置",
        "prefs_saved": "您的设置已保存。",
        "prefs_unchanged": "没有变更。",
        "prefs_confirm_others": "我确认也希望在勾选的其他渠道接收消息（此链接只对应一个渠道）。",
        "prefs_confirm_needed": "此链接来自{channel}。如需同时接收{{channels}}，请勾选下方的确认框。",
        "no_address": "未登记联系方式",
        "suppressed": "发往 {address} 的消息仍会被拦截（该地址曾退信或举报垃圾邮件）。",
        "one_click_done": "退订成功。",
    },
}


def _strings(customer, language: str = "") -> dict:
    """The page's language: the one of the message whose link was followed (carried in the
    token), else the customer's (zh-* is Chinese, anything else English)."""
    if language in STRINGS:
        return STRINGS[language]
    return STRINGS["zh-hans" if (customer.locale or "").lower().startswith("zh") else "en"]


def _masked_address(customer, channel: str) -> str:
    if channel == Channel.EMAIL:
        return mask_email(customer.email)
    if channel == Channel.SMS:
        return mask_phone(customer.phone)
    return ""


def _raw_address(customer, channel: str) -> str:
    return {Channel.EMAIL: customer.email, Channel.SMS: customer.phone}.get(channel, "")


def _evidence(request) -> dict:
    # REMOTE_ADDR, not X-Forwarded-For: a header anyone can set is no evidence. Behind a proxy,
    # the proxy must set REMOTE_ADDR (gunicorn --forwarded-allow-ips does).
    return {
        "ip": request.META.get("REMOTE_ADDR", ""),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:500],
    }


def _claim(token: str):
    """(customer, channel, language) for a valid token, or None: forged, damaged, expired,
    unknown channel or a customer that no longer exists all read as "this link is invalid"."""
    try:
        claim = unsubscribe_token_read(token)
    except BadToken:
        return None
    if claim.channel not in Channel.values:
        return None
    customer = Customer.objects.filter(pk=claim.customer_id).first()
    return (customer, claim.channel, claim.language) if customer is not None else None


def _invalid_link(request, *, plain: bool = False):
    logger.warning("consent_link_invalid path=%s", request.path)
    if plain:
        return HttpResponse("This link is invalid.\n", status=400, content_type="text/plain; charset=utf-8")
    return render(request, "consent/invalid_link.html", status=400)


def _no_leak(response):
    # The token in the URL is the customer's key to these pages: never send it to another site
    # in a Referer, never let a shared cache keep the page, and keep it out of search indexes.
    # "same-origin" sends no Referer at all to any other site, yet keeps the Origin header of
    # the page's own form POST: under "no-referrer" Chromium posts "Origin: null", which
    # Django's CSRF origin check refuses (403), so nobody could unsubscribe by clicking. The
    # Referer a same-origin request carries goes only to this site, which issued the token.
    response["Referrer-Policy"] = "same-origin"
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def _in_language(response, strings: dict):
    # LocaleMiddleware would label the page with the visitor's browser language; the page is
    # in the customer's, so say that one (it only sets the header when it is missing).
    response["Content-Language"] = strings["lang"]
    return response


def _is_one_click(request) -> bool:
    """RFC 8058: the body is exactly ``List-Unsubscribe=One-Click``, form-encoded or multipart.
    Decided by the body alone, since mailbox providers send neither cookies nor a CSRF token."""
    content_type = request.content_type or ""
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            return request.POST.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE
        except MultiPartParserError:
            return False  # then the CSRF check refuses it like any other stray POST
    return request.body.strip() == f"{ONE_CLICK_FIELD}={ONE_CLICK_VALUE}".encode()


@csrf_exempt
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request, token: str):
    """GET/HEAD: a confirmation page that changes nothing (link scanners follow links).
    POST from the page's form (CSRF-checked): withdraw, source ``unsubscribe_link``.
    RFC 8058 one-click POST (no cookies, no CSRF token): withdraw, source ``one_click``, 200.

    A repeated withdrawal is recorded again: each is evidence of what the person asked, and
    the ledger stays bounded by how often they press the button.
    """
    if request.method == "POST" and _is_one_click(request):
        return _no_leak(_unsubscribe_one_click(request, token))
    return _no_leak(_unsubscribe_page(request, token))


def _unsubscribe_one_click(request, token: str):
    claim = _claim(token)
    if claim is None:
        return _invalid_link(request, plain=True)
    customer, channel, language = claim
    services.consent_withdraw(customer=customer, channel=channel, source=Source.ONE_CLICK, evidence=_evidence(request))
    logger.info("consent_unsubscribed source=one_click customer_id=%s channel=%s", customer.pk, channel)
    strings = _strings(customer, language)
    return _in_language(HttpResponse(strings["one_click_done"] + "\n", content_type="text/plain; charset=utf-8"), strings)


@csrf_protect
def _unsubscribe_page(request, token: str):
    claim = _claim(token)
    if claim is None:
        return _invalid_link(request)
    customer, channel, language = claim
    strings = _strings(customer, language)
    channel_name = strings[f"channel_{channel}"]
    # "Marketing emails" heads a list; inside a sentence it reads "stop receiving marketing emails".
    in_sentence = channel_name[:1].lower() + channel_name[1:] if strings["lang"] == "en" else channel_name
    context = {
        "t": strings,
        "channel_name": channel_name,
        "address": _masked_address(customer, channel),
        "preferences_url": reverse("consent:preferences", args=[token]),
    }
    if request.method == "POST":
        services.consent_withdraw(
            customer=customer, channel=channel, source=Source.UNSUBSCRIBE_LINK, evidence=_evidence(request)
        )
        logger.info("consent_unsubscribed source=unsubscribe_link customer_id=%s channel=%s", customer.pk, channel)
        context["done_text"] = strings["done_text"].format(channel=in_sentence)
        return _in_language(render(request, "consent/unsubscribe_done.html", context), strings)
    withdrawn = ConsentState.objects.filter(
        customer=customer, channel=channel, status=ConsentState.Status.WITHDRAWN
    ).exists()
    context["question"] = strings["confirm_question"].format(channel=in_sentence)
    context["sent_to"] = strings["confirm_to"].format(address=context["address"]) if context["address"] else ""
    context["already"] = strings["already_withdrawn"].format(channel=in_sentence) if withdrawn else ""
    return _in_language(render(request, "consent/unsubscribe_confirm.html", context), strings)


@never_cache
@csrf_protect
@require_http_methods(["GET", "HEAD", "POST"])
def preferences(request, token: str):
    """Per-channel choices. POST records a grant or withdrawal (source ``preference_center``)
    only for the channels whose answer changed."""
    claim = _claim(token)
    if claim is None:
        return _no_leak(_invalid_link(request))
    customer, link_channel, language = claim
    strings = _strings(customer, language)
    link_channel_name = strings[f"channel_{link_channel}"]
    granted = set(
        ConsentState.objects.filter(customer=customer, status=ConsentState.Status.GRANTED).values_list("channel", flat=True)
    )
    current = {channel: channel in granted for channel in Channel.values}
    available = {
        Channel.EMAIL: bool(customer.email),
        Channel.SMS: bool(customer.phone),
        Channel.IN_APP: True,
    }
    form = PreferencesForm(
        request.POST if request.method == "POST" else None, current=current, available=available,
        link_channel=link_channel, other_channels_error=strings["prefs_confirm_needed"].format(channel=link_channel_name),
        channel_labels={channel: strings[f"channel_{channel}"] for channel in Channel.values},
    )
    message = ""
    if request.method == "POST" and form.is_valid():
        events = services.consent_preferences_update(customer=customer, wanted=form.wanted(), evidence=_evidence(request))
        logger.info("consent_preferences_saved customer_id=%s changes=%s", customer.pk, len(events))
        message = strings["prefs_saved"] if events else strings["prefs_unchanged"]
        current |= form.wanted()
    suppressed = set(
        Suppression.objects.filter(
            channel__in=[Channel.EMAIL, Channel.SMS],
            address__in=[a for a in (customer.email, customer.phone) if a],
        ).values_list("channel", flat=True)
    )
    rows = []
    for channel in Channel.values:
        address = _masked_address(customer, channel)
        rows.append(
            {
                "field": form[channel],
                "label": strings[f"channel_{channel}"],
                "address": address or ("" if channel == Channel.IN_APP else strings["no_address"]),
                # Shown when the customer wants messages the suppression will still block.
                "suppressed_note": strings["suppressed"].format(address=address)
                if channel in suppressed and current[channel]
                else "",
            }
        )
    context = {
        "t": strings, "rows": rows, "message": message, "form": form,
        "confirm_label": strings["prefs_confirm_others"].format(channel=link_channel_name),
    }
    response = render(request, "consent/preferences.html", context)
    return _no_leak(_in_language(response, strings))


# A re-subscription without the provider's message id must have been received this recently,
# and not later than now (plus a provider clock a little fast): a START dated ahead would stay
# "fresh" long enough to be replayed after the customer's next TD.
GRANT_FRESHNESS = timedelta(minutes=15)
GRANT_CLOCK_SKEW = timedelta(seconds=30)


def _recent(received_at) -> bool:
    now = timezone.now()
    return received_at is not None and now - GRANT_FRESHNESS <= received_at <= now + GRANT_CLOCK_SKEW


# How a gateway that names no charset encodes a form: UTF-8, else GB18030 (a superset of GBK,
# what Chinese gateways send).
FORM_ENCODINGS = ("utf-8", "gb18030")


def _form_fields(request) -> dict[str, str]:
    """The webhook's form fields, without NUL characters (PostgreSQL text cannot hold one; in an
    SMS it is noise). Multipart is Django's to decode. A urlencoded body is decoded here, in its
    declared charset, else as UTF-8, else as GB18030: Django refuses a declared non-UTF-8
    charset outright and reads undeclared GBK bytes as UTF-8, storing U+FFFD where the text was
    (so 退订 would not be recognised)."""
    return {key.replace("\x00", ""): value.replace("\x00", "") for key, value in _decoded_fields(request).items()}


def _decoded_fields(request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        return {key: request.POST.get(key) for key in request.POST}
    declared = request.content_params.get("charset", "").strip().lower()
    encodings = [*([declared] if declared else []), *FORM_ENCODINGS]
    # latin-1 maps every byte to one character and back, so the raw bytes of each value survive.
    pairs = parse_qsl(request.body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    raw = [(key.encode("latin-1"), value.encode("latin-1")) for key, value in pairs]
    for encoding in encodings:
        try:
            return dict((key.decode(encoding), value.decode(encoding)) for key, value in raw)
        except (UnicodeDecodeError, LookupError):
            continue
    # A repeated field keeps its last value, as QueryDict.get gives.
    return {key.decode("utf-8", "replace"): value.decode("utf-8", "replace") for key, value in raw}


@csrf_exempt
@require_POST
def sms_inbound(request):
    """Inbound SMS from a provider: form fields ``from`` and ``text`` (optional ``id``,
    ``received_at`` as ISO 8601), header ``X-Signature`` = hex HMAC-SHA256 of the raw body keyed
    with SMS_WEBHOOK_SECRET. 503 when no secret is configured, 403 on a missing or wrong
    signature, 400 on a malformed body; nothing is recorded in any of these cases.

    ``received_at`` must be a real time within core.time_bounds. Out of bounds, an opt-out or a
    reply is still recorded (at the time it arrived here: an opt-out is honoured whatever the
    provider's clock says), while a re-subscription is refused.
    """
    secret = getattr(settings, "SMS_WEBHOOK_SECRET", "")
    if not secret:
        logger.error("sms_inbound_refused reason=no_secret_configured")
        return JsonResponse({"error": "SMS webhook is not configured."}, status=503)
    body = request.body
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
    # Header values arrive as latin-1 text; compare bytes so any value is comparable.
    given = request.headers.get("X-Signature", "").strip().lower().encode("latin-1", "replace")
    if not given or not hmac.compare_digest(expected, given):
        logger.warning("sms_inbound_refused reason=%s", "missing_signature" if not given else "bad_signature")
        return JsonResponse({"error": "Bad signature."}, status=403)
    fields = _form_fields(request)
    sender, text = fields.get("from", "").strip(), fields.get("text")
    if not sender or text is None:
        logger.warning("sms_inbound_refused reason=missing_fields")
        return JsonResponse({"error": "Fields 'from' and 'text' are required."}, status=400)
    try:
        received_at = time_parse(fields.get("received_at"), naive_allowed=True)
    except ValueError:
        logger.warning("sms_inbound_refused reason=bad_received_at")
        return JsonResponse({"error": "received_at must be an ISO 8601 date and time."}, status=400)
    provider_id = fields.get("id", "")[:100]
    out_of_bounds = time_bounds_problem(received_at) if received_at is not None else None
    # The signature covers the body only, so a captured request can be sent again. Replaying a
    # STOP is harmless; replaying a START would re-grant consent. A grant therefore needs the
    # provider's message id (recorded once per id) or a received_at inside a short window in
    # the past (and the service records a message without an id once per sender, text and time).
    if sms_intent(text) == SmsIntent.GRANT:
        if out_of_bounds:
            logger.warning("sms_inbound_refused reason=grant_received_at_out_of_bounds")
            return JsonResponse({"error": f"received_at {out_of_bounds}"}, status=400)
        if not provider_id and not _recent(received_at):
            logger.warning("sms_inbound_refused reason=grant_without_id_or_fresh_time")
            return JsonResponse(
                {"error": "A re-subscription needs the provider's message 'id' or a 'received_at' "
                          f"within the last {GRANT_FRESHNESS.seconds // 60} minutes (not in the future)."},
                status=400,
            )
    elif out_of_bounds:
        logger.warning("sms_inbound_received_at_out_of_bounds received_at=%r: recorded as received now",
                       fields.get("received_at", "")[:40])
        received_at = None
    reply = services.sms_reply_record(sender=sender, text=text, provider_id=provider_id, received_at=received_at)
    return JsonResponse({"id": reply.pk, "outcome": reply.outcome})
