"""A preview is the message the sender would send: same rendering, same SMS composition, same
From; only the unsubscribe links are inert and a missing grant is an unsaved sample."""

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from campaigns.channels.base import OutboundMessage
from campaigns.channels.email import EmailTransport
from campaigns.channels.sms import SmsBackend, SmsTransport
from campaigns.models import ChannelPolicy, ContactPolicy, Delivery, MessageTemplateTranslation, OfferGrant
from campaigns.previews import (
    CUSTOMER_SEARCH_LIMIT,
    customers_matching,
    grant_of,
    inbox_preheader,
    message_preview,
    preview_for_test_send,
    preview_send,
)
from campaigns.rendering import render_message, sample_customer
from tests.factories import (
    BrandFactory,
    CampaignFactory,
    CustomerFactory,
    MessageTemplateFactory,
    OfferFactory,
    OfferGrantFactory,
)

pytestmark = pytest.mark.django_db


class RecordingSmsBackend(SmsBackend):
    def __init__(self):
        self.sent = []

    def send(self, *, to, text, campaign="", reference=""):
        self.sent.append(text)
        return "sms-1"


def sms_transport(backend):
    return SmsTransport(backend=backend, channel_policy=ChannelPolicy(channel="sms", quiet_hours_enabled=False))


# Customers to preview for ---------------------------------------------------------------------


def test_an_exact_external_id_is_the_customer_else_names_containing_the_term_newest_first():
    named_older = CustomerFactory(name="Anna Lee")
    exact = CustomerFactory(external_id="ann", name="Someone")
    named_newer = CustomerFactory(name="JOANNA")
    CustomerFactory(name="Bob")

    assert customers_matching(term=" ann ") == [exact]
    assert customers_matching(term="ANN") == [named_newer, named_older]
    assert customers_matching(term="") == []


def test_a_search_lists_at_most_the_limit():
    CustomerFactory.create_batch(CUSTOMER_SEARCH_LIMIT + 3, name="王伟")
    assert len(customers_matching(term="王")) == CUSTOMER_SEARCH_LIMIT


@pytest.mark.postgres
@pytest.mark.parametrize("term", ["rivera", "洋"])
def test_a_name_search_can_use_the_customer_lists_trigram_index(term):
    """The same condition as the customer list (reactivation.selectors.name_search_q), so the
    index of migration reactivation 0005 serves it; only bitmap scans are left to the planner
    because a handful of rows is cheaper to read in any other way."""
    CustomerFactory(name="Julian Rivera")
    CustomerFactory(name="崔洋")
    with CaptureQueriesContext(connection) as captured:
        assert len(customers_matching(term=term)) == 1
    sql = captured.captured_queries[-1]["sql"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + sql)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "customer_name_search_idx" in plan, plan


def test_the_grant_of_a_customer_is_their_latest_from_that_campaign_only():
    campaign, other = CampaignFactory(offer=OfferFactory()), CampaignFactory(offer=OfferFactory())
    customer = CustomerFactory()
    OfferGrantFactory(customer=customer, campaign=other, offer=other.offer)
    grant = OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer)

    assert grant_of(customer=customer, campaign=campaign) == grant
    assert grant_of(customer=CustomerFactory(), campaign=campaign) is None
    assert grant_of(customer=sample_customer(), campaign=campaign) is None


# The message ----------------------------------------------------------------------------------


def test_the_preheader_is_the_first_visible_text_without_head_or_link_urls():
    html = ("<html><head><title>Subject</title><style>p{}</style></head><body><a href='https://x.example/'>Shop</a>"
            "<p>Hello   there,</p><p>" + "word " * 40 + "</p></body></html>")
    preheader = inbox_preheader(html)
    assert preheader.startswith("Shop Hello there, word word")
    assert len(preheader) == 100 and preheader.endswith("…")
    assert inbox_preheader("<p>Short</p>") == "Short"


def test_an_sms_preview_is_what_the_sms_transport_sends_for_that_customer_and_campaign():
    # given an SMS campaign of a brand and an English-speaking customer
    template = MessageTemplateFactory(channel="sms", sms_text="{{ customer.name }}，好久不见")
    MessageTemplateTranslation.objects.create(template=template, locale="en", sms_text="Hi {{ customer.first_name }}, come back")
    campaign = CampaignFactory(channels=["sms"], sms_template=template, email_template=None,
                               brand=BrandFactory(name="Qinghe", sms_signature="Qinghe"))
    customer = CustomerFactory(name="Emma Clarke", locale="en")

    # when it is previewed, and when the transport sends the same message to the customer
    preview = message_preview(template=template, customer=customer, campaign=campaign)
    backend = RecordingSmsBackend()
    rendered = render_message(template=template, customer=customer, campaign=campaign)
    sms_transport(backend).send(OutboundMessage(to=customer.phone, rendered=rendered, customer=customer, campaign=campaign))

    # then the preview's text as sent is the text the provider got: signature, English opt-out
    assert preview.sms.full_text == backend.sent[0] == "【Qinghe】Hi Emma, come back. Reply STOP to opt out"
    assert (preview.sms.full.encoding, preview.sms.full.parts) == ("UCS-2", 1)  # 【】 are not GSM-7
    assert preview.sms.body.chars == len("Hi Emma, come back")


def test_an_sms_preview_without_a_campaign_is_signed_with_the_contact_policys_signature():
    template = MessageTemplateFactory(channel="sms", sms_text="好久不见")
    preview = message_preview(template=template, customer=sample_customer())
    assert preview.sms.full_text == f"【{ContactPolicy.current().sms_signature}】好久不见。回复TD退订"


def test_an_email_preview_has_the_from_the_email_transport_writes():
    template = MessageTemplateFactory()
    campaign = CampaignFactory(email_template=template, brand=BrandFactory(name="Qinghe", from_name="青禾生活 Qinghe",
                                                                           from_email="hello@qinghe.example.com"))
    customer = CustomerFactory()
    preview = message_preview(template=template, customer=customer, campaign=campaign)
    built = EmailTransport().build(OutboundMessage(to=customer.email, rendered=preview.message, customer=customer,
                                                   campaign=campaign))
    assert preview.from_email == built.from_email
    assert preview.from_display == "青禾生活 Qinghe <hello@qinghe.example.com>"
    assert preview.preheader.startswith("Qinghe ")  # the brand's header is the first text


def test_an_offer_without_a_grant_of_the_customer_shows_an_unsaved_sample():
    template = MessageTemplateFactory()
    campaign = CampaignFactory(email_template=template, offer=OfferFactory(valid_days=7))
    preview = message_preview(template=template, customer=CustomerFactory(), campaign=campaign, real_grant=True)
    assert preview.grant_is_sample and not preview.grant_withheld
    assert preview.grant.pk is None and "SAMP-LE23-CODE" in preview.message.html
    assert "/offers/claim/preview/" in preview.message.html
    assert not OfferGrant.objects.exists()


def test_a_customers_real_grant_is_used_only_when_asked_for():
    template = MessageTemplateFactory()
    campaign = CampaignFactory(email_template=template, offer=OfferFactory())
    customer = CustomerFactory()
    grant = OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer, code="K7QM-3XPA-9RTW")

    real = message_preview(template=template, customer=customer, campaign=campaign, real_grant=True)
    withheld = message_preview(template=template, customer=customer, campaign=campaign, real_grant=False)

    assert real.grant == grant and "K7QM-3XPA-9RTW" in real.message.html and not real.grant_is_sample
    assert withheld.grant_is_sample and withheld.grant_withheld and "K7QM" not in withheld.message.html


def test_a_template_that_cannot_be_rendered_gives_the_error_and_cannot_be_sent():
    template = MessageTemplateFactory(html_body="<p>{{ nothing }}</p>")
    preview = message_preview(template=template, customer=sample_customer())
    assert preview.message is None and "nothing" in preview.error
    with pytest.raises(Exception, match="nothing"):
        preview_send(preview=preview, to="me@example.com")
    assert mail.outbox == []


def test_a_test_send_goes_to_the_typed_address_as_the_brand_and_is_no_delivery():
    template = MessageTemplateFactory()
    campaign = CampaignFactory(email_template=template, brand=BrandFactory(name="Qinghe", from_email="hi@qinghe.example.com",
                                                                           from_name=""))
    preview = message_preview(template=template, customer=CustomerFactory(name="王芳"), campaign=campaign)

    outcome = preview_send(preview=preview, to="me@example.com")

    assert outcome == "sent by email"
    [sent] = mail.outbox
    assert sent.to == ["me@example.com"] and sent.from_email == "Qinghe <hi@qinghe.example.com>"
    assert sent.subject == "[TEST] 想你了！Qinghe 期待与您重逢" and "王芳" in sent.body
    assert not Delivery.objects.exists()


def test_a_test_renders_the_sample_grant_even_for_a_customer_with_their_own():
    campaign = CampaignFactory(email_template=MessageTemplateFactory(html_body="<p>{{ grant.code }}</p>"),
                               offer=OfferFactory())
    customer = CustomerFactory()
    OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer, code="K7QM-3XPA-9RTW")

    test = preview_for_test_send(template=campaign.email_template, customer=customer, campaign=campaign)

    assert test.grant_is_sample and test.grant.pk is None
    assert "SAMP-LE23-CODE" in test.message.html and "K7QM-3XPA-9RTW" not in test.message.html
    assert "/offers/claim/preview/" in test.message.html


def test_a_test_send_of_a_preview_with_the_customers_own_grant_is_refused():
    campaign = CampaignFactory(email_template=MessageTemplateFactory(html_body="<p>{{ grant.code }}</p>"),
                               offer=OfferFactory())
    customer = CustomerFactory()
    OfferGrantFactory(customer=customer, campaign=campaign, offer=campaign.offer, code="K7QM-3XPA-9RTW")
    own = message_preview(template=campaign.email_template, customer=customer, campaign=campaign, real_grant=True)

    with pytest.raises(ValueError, match="sample grant"):
        preview_send(preview=own, to="anyone@example.com")
    assert not mail.outbox
