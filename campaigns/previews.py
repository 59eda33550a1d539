"""A template rendered for one customer and campaign exactly as the sender would render it,
for the admin's preview and test send.

Nothing here renders on its own: the message comes from ``campaigns.rendering.render_message``
(the function ``campaigns.sending`` calls for every delivery), the SMS as billed from
``campaigns.channels.sms.sms_compose_for`` (what the SMS transport sends) and the From of an
email from ``campaigns.channels.email.brand_from_email`` (what the email transport writes).
What differs from a real send is deliberate and only this:

- the unsubscribe and preference links are inert (``preview=True``): a marketer clicking
  them in a preview or a test unsubscribes nobody;
- without a real grant (none yet, or the viewer may not see codes) the offer is an unsaved
  sample grant with a recognisably fake code and the offer's real validity, and its claim
  link leads to no grant (the claim page answers "not found");
- a test always carries that sample grant, never the customer's own: it goes to any address
  the marketer typed, and a real code or a working claim link there would hand the
  customer's offer to whoever reads it;
- a test goes to the address the marketer typed, through the channel's ``send_test``: no
  Delivery row, so no cap or report counts it.
"""

import random
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from html.parser import HTMLParser

from campaigns.channels.email import brand_from_email
from campaigns.channels.registry import transport_for
from campaigns.channels.sms import sms_compose_for
from campaigns.models import Campaign, ContactPolicy, MessageTemplate, OfferGrant
from campaigns.rendering import RenderedMessage, TemplateRenderError, render_message, sample_grant
from campaigns.sms_length import SmsLength, sms_parts
from consent.models import Channel
from reactivation.models import Customer
from reactivation.selectors import name_search_q

# Customers a search lists: the newest twenty matches, enough to pick one from.
CUSTOMER_SEARCH_LIMIT = 20
# A random customer of a segment is drawn among its first rows: ORDER BY random() would sort
# the whole segment, which may be millions of rows.
SEGMENT_SAMPLE_SIZE = 1000
# Roughly what Gmail, Outlook and Apple Mail show of the first text after the subject.
PREHEADER_LENGTH = 100


# Reads --------------------------------------------------------------------------------------


def customers_matching(*, term: str, limit: int = CUSTOMER_SEARCH_LIMIT) -> list[Customer]:
    """The customer whose external id is ``term`` (an index lookup), else the customers whose
    name contains it (case-insensitive), newest first, at most ``limit``. The name search is the
    customer list's (``reactivation.selectors.name_search_q``): on PostgreSQL its trigram index
    serves any term of three characters or more and any Chinese one."""
    term = term.strip()
    if not term:
        return []
    exact = list(Customer.objects.filter(external_id=term)[:1])
    return exact or list(Customer.objects.filter(name_search_q(term)).order_by("-pk")[:limit])


def customer_of_segment(*, campaign: Campaign) -> Customer | None:
    """A random customer among the first rows of the campaign's segment; None when it is empty."""
    ids = list(campaign.segment.customers().values_list("pk", flat=True)[:SEGMENT_SAMPLE_SIZE])
    return Customer.objects.get(pk=random.choice(ids)) if ids else None


def grant_of(*, customer: Customer, campaign: Campaign) -> OfferGrant | None:
    """The customer's latest grant from this campaign (the one their message carried)."""
    if customer.pk is None:
        return None
    return (
        OfferGrant.objects.filter(customer=customer, campaign=campaign)
        .select_related("offer").order_by("-granted_at", "-pk").first()
    )


# The preview --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsPreview:
    """The SMS text as rendered (``body``) and as sent and billed (``full_text``: with the
    brand's 【signature】 and the opt-out text in the message's language), with their lengths."""

    body: SmsLength
    full_text: str
    full: SmsLength


@dataclass(frozen=True)
class MessagePreview:
    """``message`` is None when the template cannot be rendered (``error`` says why).

    ``grant``: the grant the message carries (None without an offer); ``grant_is_sample``:
    an unsaved sample, not the customer's own; ``grant_withheld``: the customer has a real
    grant for this campaign that the viewer may not see, so the sample stands in for it.
    ``from_email`` and ``reply_to``: the headers the email transport writes for the brand.
    ``preheader``: the first words an inbox shows after the subject.
    """

    template: MessageTemplate
    customer: Customer
    campaign: Campaign | None
    message: RenderedMessage | None
    error: str = ""
    grant: OfferGrant | None = None
    grant_is_sample: bool = False
    grant_withheld: bool = False
    from_email: str = ""
    reply_to: str = ""
    preheader: str = ""
    sms: SmsPreview | None = None

    @property
    def brand(self):
        return getattr(self.campaign, "brand", None)

    @property
    def from_display(self) -> str:
        """The From as a mail client shows it: a non-ASCII name is sent RFC 2047-encoded."""
        return str(make_header(decode_header(self.from_email))) if self.from_email else ""


class _VisibleText(HTMLParser):
    """The text a reader sees, in order (link URLs and the head left out)."""

    _HIDDEN = frozenset({"head", "title", "style", "script"})

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        self._hidden += tag in self._HIDDEN

    def handle_endtag(self, tag):
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden - 1)

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def inbox_preheader(html: str, *, length: int = PREHEADER_LENGTH) -> str:
    """The text an inbox shows after the subject: the document's first visible words, on one line."""
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    text = re.sub(r"\s+", " ", " ".join(parser.parts)).strip()
    return text if len(text) <= length else text[: length - 1].rstrip() + "…"


def message_preview(*, template: MessageTemplate, customer: Customer, campaign: Campaign | None = None,
                    real_grant: bool = False) -> MessagePreview:
    """``template`` rendered for ``customer`` as ``campaign`` would send it: its brand (From,
    SMS signature, postal footer, shop link), its offer and the customer's language variant.

    ``real_grant``: use the customer's own grant from this campaign when there is one (its
    code is real: pass True only for a viewer who may see codes); otherwise, with an offer, an
    unsaved sample grant. See the module docstring for what differs from a real send.
    """
    brand = getattr(campaign, "brand", None) if campaign is not None and campaign.brand_id else None
    offer = campaign.offer if campaign is not None and campaign.offer_id else None
    grant, is_sample, withheld = None, False, False
    if offer is not None:
        own = grant_of(customer=customer, campaign=campaign)
        if own is not None and real_grant:
            grant = own
        else:
            grant, is_sample, withheld = sample_grant(offer), True, own is not None
    try:
        message = render_message(template=template, customer=customer, campaign=campaign, grant=grant, preview=True)
    except TemplateRenderError as exc:
        return MessagePreview(template=template, customer=customer, campaign=campaign, message=None, error=str(exc),
                              grant=grant, grant_is_sample=is_sample, grant_withheld=withheld)
    extra = {}
    if template.channel == Channel.EMAIL:
        extra = {"from_email": brand_from_email(brand), "reply_to": brand.reply_to if brand is not None else "",
                 "preheader": inbox_preheader(message.html)}
    elif template.channel == Channel.SMS:
        full = sms_compose_for(text=message.text, brand=brand, contact_policy=ContactPolicy.current(),
                               language=message.language)
        extra = {"sms": SmsPreview(body=sms_parts(message.text), full_text=full, full=sms_parts(full))}
    return MessagePreview(template=template, customer=customer, campaign=campaign, message=message, grant=grant,
                          grant_is_sample=is_sample, grant_withheld=withheld, **extra)


# The test send ------------------------------------------------------------------------------


def preview_for_test_send(*, template: MessageTemplate, customer: Customer,
                         campaign: Campaign | None = None) -> MessagePreview:
    """``template`` rendered for a test send: as ``message_preview`` renders it for a viewer who
    may not see codes, so that the offer is always the sample grant and its claim link inert."""
    return message_preview(template=template, customer=customer, campaign=campaign, real_grant=False)


def preview_send(*, preview: MessagePreview, to: str) -> str:
    """Send ``preview``'s message once to ``to`` (an address the marketer typed) as the
    campaign's brand would: its From and Reply-To, or its SMS signature (DEFAULT_FROM_EMAIL and
    the contact policy's signature without a campaign). Not a marketing delivery: no Delivery
    row, no consent or window check, nothing counted. Returns what was done ("sent by email");
    the transport's errors propagate.

    ``preview`` must come from ``preview_for_test_send``: one carrying a customer's own grant
    (a real code, a working claim link) is refused with ValueError."""
    if preview.grant is not None and not preview.grant_is_sample:
        raise ValueError("A test carries the sample grant, never a customer's own.")
    if preview.message is None:
        raise TemplateRenderError(preview.error)
    channel = preview.template.channel
    return transport_for(channel).send_test(to=to, message=preview.message, brand=preview.brand) or "sent"
