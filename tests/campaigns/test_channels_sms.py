"""SMS transport and backends (campaigns.channels.sms): file backend, HTTP gateway with a
patched requests session, signature, opt-out text, sending window, switches."""

import json
from datetime import datetime, time, timezone as dt_timezone
from unittest import mock

import pytest
import requests
from hypothesis import given
from hypothesis import settings as settings_h
from hypothesis import strategies as st

from campaigns.channels.base import OutboundMessage, TransportError
from campaigns.channels.sms import FileSmsBackend, HttpSmsBackend, SmsTransport, sms_backend, sms_compose
from campaigns.models import ChannelPolicy, ContactPolicy
from campaigns.rendering import RenderedMessage
from tests.factories import BrandFactory, CampaignFactory, CustomerFactory

pytestmark = pytest.mark.django_db

# 12:00 in Shanghai, 00:00 in New York (EDT).
NOON_SHANGHAI = datetime(2024, 6, 3, 4, 0, tzinfo=dt_timezone.utc)


def outbound(customer, text="好久不见，回来看看吧", campaign=None):
    return OutboundMessage(to=customer.phone, rendered=RenderedMessage(text=text), customer=customer, campaign=campaign,
                           delivery_id=7)


def transport(backend, now=NOON_SHANGHAI):
    return SmsTransport(backend=backend, clock=lambda: now)


def test_file_backend_appends_one_json_line_with_the_brands_signature_and_the_opt_out(settings, tmp_path):
    settings.SMS_BACKEND = "file"
    customer = CustomerFactory(phone="+8613812345678", timezone="Asia/Shanghai")
    campaign = CampaignFactory(name="Double points", brand=BrandFactory(name="青禾生活", sms_signature="青禾"))

    transport(sms_backend()).send(outbound(customer, campaign=campaign))
    transport(sms_backend()).send(outbound(customer, campaign=campaign))

    lines = [json.loads(line) for line in open(settings.SMS_FILE_PATH, encoding="utf-8")]
    assert lines[0] == {"to": "+8613812345678", "text": "【青禾】好久不见，回来看看吧。回复TD退订", "campaign": "Double points"}
    assert len(lines) == 2


def test_a_message_without_a_brand_is_signed_with_the_contact_policys_signature():
    ContactPolicy.objects.update_or_create(pk=1, defaults={"sms_signature": "小店"})
    backend = mock.Mock(spec=FileSmsBackend)

    transport(backend).send(outbound(CustomerFactory(timezone="Asia/Shanghai"), text="你好"))
    transport(backend).send_test(to="+8613812345678", message=RenderedMessage(text="你好"))

    assert [call.kwargs["text"] for call in backend.send.call_args_list] == ["【小店】你好。回复TD退订"] * 2


def test_configured_signature_and_opt_out_text_are_used_and_never_doubled():
    ContactPolicy.objects.update_or_create(pk=1, defaults={"sms_signature": "小店", "sms_opt_out_text": "拒收请回复R"})

    assert sms_compose(text="【小店】你好。拒收请回复R", signature="小店", opt_out_text="拒收请回复R") == "【小店】你好。拒收请回复R"
    backend = mock.Mock(spec=FileSmsBackend)
    transport(backend).send(outbound(CustomerFactory(timezone="Asia/Shanghai"), text="你好"))
    assert backend.send.call_args.kwargs["text"] == "【小店】你好。拒收请回复R"


@pytest.mark.parametrize("text, signature, opt_out, composed", [
    # A sentence without final punctuation gets the full stop of its script.
    ("积分翻倍活动今天回来就生效", "品牌", "回复TD退订", "【品牌】积分翻倍活动今天回来就生效。回复TD退订"),
    ("Double points when you come back today", "Qinghe", "Reply STOP to opt out",
     "【Qinghe】Double points when you come back today. Reply STOP to opt out"),
    # Already ended: the opt-out follows (after a space in Western text).
    ("好久不见！", "品牌", "回复TD退订", "【品牌】好久不见！回复TD退订"),
    ("好久不见？", "品牌", "拒收请回复R", "【品牌】好久不见？拒收请回复R"),
    ("期待与您重逢。", "品牌", "回复TD退订", "【品牌】期待与您重逢。回复TD退订"),
    ("期待与您重逢…", "品牌", "回复TD退订", "【品牌】期待与您重逢…回复TD退订"),
    ("快来看看吧!", "品牌", "回复TD退订", "【品牌】快来看看吧!回复TD退订"),
    ("We miss you!", "Qinghe", "Reply STOP to opt out", "【Qinghe】We miss you! Reply STOP to opt out"),
    ("Still there?", "Qinghe", "Reply STOP to opt out", "【Qinghe】Still there? Reply STOP to opt out"),
    ("See you soon.", "Qinghe", "Reply STOP to opt out", "【Qinghe】See you soon. Reply STOP to opt out"),
    ('他说：“回来吧！”', "品牌", "回复TD退订", "【品牌】他说：“回来吧！”回复TD退订"),
    # Mixed text with Chinese in it takes the ideographic full stop.
    ("VIP专享 20% off", "品牌", "回复TD退订", "【品牌】VIP专享 20% off。回复TD退订"),
    # A template that already wrote the signature or the opt-out gets neither twice; an
    # opt-out glued to the sentence is set off.
    ("【品牌】积分翻倍。回复TD退订", "品牌", "回复TD退订", "【品牌】积分翻倍。回复TD退订"),
    ("积分翻倍回复TD退订", "品牌", "回复TD退订", "【品牌】积分翻倍。回复TD退订"),
    ("Come back. Reply STOP to opt out", "Qinghe", "Reply STOP to opt out",
     "【Qinghe】Come back. Reply STOP to opt out"),
    ("Come back Reply STOP to opt out", "Qinghe", "Reply STOP to opt out",
     "【Qinghe】Come back. Reply STOP to opt out"),
    # Nothing to set off, nothing configured.
    ("", "品牌", "回复TD退订", "【品牌】回复TD退订"),
    ("  你好  ", "", "", "你好"),
    ("你好", "品牌", "", "【品牌】你好"),
])
def test_sms_compose_sets_the_opt_out_off_as_its_own_sentence(text, signature, opt_out, composed):
    assert sms_compose(text=text, signature=signature, opt_out_text=opt_out) == composed
    assert sms_compose(text=composed, signature=signature, opt_out_text=opt_out) == composed


@settings_h(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("好久不见回来 abcSTOP.。!！?？…”\"【】R退订TD复")), max_size=30),
       signature=st.sampled_from(["", "品牌", "Qinghe"]),
       opt_out=st.sampled_from(["", "回复TD退订", "拒收请回复R", "Reply STOP to opt out", "STOP"]))
def test_sms_compose_is_idempotent(text, signature, opt_out):
    once = sms_compose(text=text, signature=signature, opt_out_text=opt_out)

    assert sms_compose(text=once, signature=signature, opt_out_text=opt_out) == once
    assert once.startswith(f"【{signature}】" if signature else "") and once.endswith(opt_out)


def test_outside_the_window_in_the_customers_zone_is_refused_with_the_opening_time():
    backend = mock.Mock(spec=FileSmsBackend)
    new_york = CustomerFactory(timezone="America/New_York")

    with pytest.raises(TransportError) as caught:
        transport(backend).send(outbound(new_york))

    assert not caught.value.permanent
    assert caught.value.retry_at == datetime(2024, 6, 3, 12, 0, tzinfo=dt_timezone.utc)  # 08:00 EDT
    backend.send.assert_not_called()
    transport(backend).send(outbound(CustomerFactory(timezone="Asia/Shanghai")))
    assert backend.send.call_count == 1


def test_window_can_be_switched_off_and_reshaped():
    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=False)
    backend = mock.Mock(spec=FileSmsBackend)
    transport(backend).send(outbound(CustomerFactory(timezone="America/New_York")))
    assert backend.send.call_count == 1

    ChannelPolicy.objects.filter(channel="sms").update(quiet_hours_enabled=True, window_start=time(22), window_end=time(6))
    transport(backend).send(outbound(CustomerFactory(timezone="America/New_York")))  # 00:00 is inside 22-06
    assert backend.send.call_count == 2


def test_sms_switched_off_globally_or_for_the_campaign_is_a_permanent_refusal():
    backend = mock.Mock(spec=FileSmsBackend)
    customer = CustomerFactory(timezone="Asia/Shanghai")
    with pytest.raises(TransportError, match="switched off") as caught:
        transport(backend).send(outbound(customer, campaign=CampaignFactory(sms_enabled=False)))
    assert caught.value.permanent
    ContactPolicy.objects.update_or_create(pk=1, defaults={"sms_enabled": False})
    with pytest.raises(TransportError, match="switched off"):
        transport(backend).send(outbound(customer))
    backend.send.assert_not_called()


def response(status, body):
    result = mock.Mock(status_code=status)
    result.json.return_value = body
    return result


def test_http_gateway_posts_the_documented_body_with_the_token(settings):
    settings.SMS_HTTP_URL = "https://sms.example.com/send"
    settings.SMS_HTTP_TOKEN = "secret-token"
    with mock.patch.object(requests.Session, "post", autospec=True, return_value=response(200, {"id": "gw-1"})) as post:
        provider_id = HttpSmsBackend().send(to="+8613812345678", text="【品牌】你好。回复TD退订", campaign="C", reference="7")

    assert provider_id == "gw-1"
    _session, url = post.call_args.args
    assert url == "https://sms.example.com/send"
    assert post.call_args.kwargs["json"] == {"to": "+8613812345678", "text": "【品牌】你好。回复TD退订", "campaign": "C", "reference": "7"}
    assert post.call_args.kwargs["headers"] == {"Authorization": "Bearer secret-token"}
    assert post.call_args.kwargs["timeout"] == 10


@pytest.mark.parametrize("status, body, permanent, bad_address", [
    (400, {"error": "bad_request"}, True, False),
    (422, {"error": "unprocessable"}, True, True),
    (400, {"error": "invalid_number"}, True, True),
    (429, {}, False, False),
    (503, ValueError("not json"), False, False),
])
def test_http_gateway_errors(settings, status, body, permanent, bad_address):
    settings.SMS_HTTP_URL = "https://sms.example.com/send"
    reply = response(status, {})
    if isinstance(body, Exception):
        reply.json.side_effect = body
    else:
        reply.json.return_value = body
    with mock.patch.object(requests.Session, "post", autospec=True, return_value=reply):
        with pytest.raises(TransportError) as caught:
            HttpSmsBackend().send(to="+8613812345678", text="x")

    assert (caught.value.permanent, caught.value.bad_address) == (permanent, bad_address)


def test_http_gateway_timeouts_are_transient_and_a_missing_url_is_permanent(settings):
    settings.SMS_HTTP_URL = "https://sms.example.com/send"
    with mock.patch.object(requests.Session, "post", autospec=True, side_effect=requests.Timeout("slow")):
        with pytest.raises(TransportError) as caught:
            HttpSmsBackend().send(to="+8613812345678", text="x")
    assert not caught.value.permanent
    settings.SMS_HTTP_URL = ""
    with pytest.raises(TransportError) as caught:
        HttpSmsBackend().send(to="+8613812345678", text="x")
    assert caught.value.permanent


def test_replies_from_the_file_backend_and_the_http_gateway(settings, tmp_path):
    replies = tmp_path / "replies.jsonl"
    replies.write_text(
        json.dumps({"sender": "+8613812345678", "text": "TD", "provider_id": "r1", "received_at": "2024-06-03T10:00:00+08:00"})
        + "\nnot json\n\n" + json.dumps({"from": "+8613900000000", "text": "好的", "id": "r2"}) + "\n", encoding="utf-8")
    settings.SMS_REPLIES_PATH = str(replies)
    settings.SMS_BACKEND = "file"

    got = list(sms_backend().fetch_replies())

    assert [(r.sender, r.text, r.provider_id) for r in got] == [("+8613812345678", "TD", "r1"), ("+8613900000000", "好的", "r2")]
    assert got[0].received_at == "2024-06-03T10:00:00+08:00"
    settings.SMS_BACKEND = "console"
    assert list(sms_backend().fetch_replies()) == []
    settings.SMS_HTTP_REPLIES_URL = "https://sms.example.com/replies"
    reply = response(200, {"replies": [{"from": "+8613812345678", "text": "STOP", "id": "g1", "received_at": None}]})
    with mock.patch.object(requests.Session, "get", autospec=True, return_value=reply) as get:
        pulled = HttpSmsBackend().fetch_replies()
    assert [(r.sender, r.text, r.provider_id) for r in pulled] == [("+8613812345678", "STOP", "g1")]
    assert get.call_args.args[1] == "https://sms.example.com/replies"


def test_unknown_backend_name_fails_loudly(settings):
    settings.SMS_BACKEND = "no.such.Backend"
    with pytest.raises(ImportError):
        sms_backend()


@pytest.mark.parametrize("text", ["好久不见 领取：https://x.example/offers/claim/7K.abc/", "Claim: http://x.example/c/1"])
def test_the_opt_out_after_a_link_is_set_off_by_a_space_not_glued_to_it(text):
    composed = sms_compose(text=text, signature="青禾生活", opt_out_text="回复TD退订")
    assert composed.endswith(text.rsplit(" ", 1)[-1] + " 回复TD退订")
    assert sms_compose(text=composed, signature="青禾生活", opt_out_text="回复TD退订") == composed
