import pytest
import tablib
from django.core.management import CommandError, call_command

from campaigns.models import MessageTemplate, Offer, Redemption
from campaigns.resources import MessageTemplateResource, OfferResource
from tests.factories import CampaignFactory, MessageTemplateFactory, OfferFactory, OfferGrantFactory

pytestmark = pytest.mark.django_db


def test_offer_export_neutralizes_formulas_and_import_ignores_granted_count():
    OfferFactory(name="=HYPERLINK(\"http://evil\")", description="@SUM(A1)", budget=50)
    Offer.objects.update(granted_count=7)
    exported = OfferResource().export()
    row = dict(zip(exported.headers, exported[0]))
    assert row["name"] == "'=HYPERLINK(\"http://evil\")" and row["description"] == "'@SUM(A1)"
    assert row["granted_count"] == "7"

    data = tablib.Dataset(headers=["name", "kind", "discount_type", "discount_value", "budget", "usage_mode",
                                   "is_active", "granted_count"])
    data.append(["Spring", "coupon", "amount", "20", "100", "single_use", "1", "9999"])
    result = OfferResource().import_data(data, dry_run=False)
    assert not result.has_errors() and not result.has_validation_errors()
    spring = Offer.objects.get(name="Spring")
    assert (spring.budget, spring.granted_count) == (100, 0)


def test_offer_import_runs_the_model_rules():
    data = tablib.Dataset(headers=["name", "kind", "discount_type", "discount_value", "usage_mode", "is_active"])
    data.append(["Bad coupon", "coupon", "percent", "150", "single_use", "1"])
    result = OfferResource().import_data(data, dry_run=False)
    assert result.has_validation_errors()
    assert not Offer.objects.filter(name="Bad coupon").exists()


def test_template_round_trip_and_broken_template_refused():
    MessageTemplateFactory(name="Nostalgic")
    exported = MessageTemplateResource().export()
    MessageTemplate.objects.all().delete()
    assert not MessageTemplateResource().import_data(exported, dry_run=False).has_validation_errors()
    assert MessageTemplate.objects.get(name="Nostalgic").subject == "想你了！{{ brand }} 期待与您重逢"

    data = tablib.Dataset(headers=["name", "channel", "subject", "html_body"])
    data.append(["Broken", "email", "hi", "{% load static %}"])
    result = MessageTemplateResource().import_data(data, dry_run=False)
    assert result.has_validation_errors()
    error = result.invalid_rows[0].error_dict
    assert "html_body" in error and "load" in str(error["html_body"])
    assert not MessageTemplate.objects.filter(name="Broken").exists()


def test_a_template_import_keeps_its_language_and_cannot_break_a_campaign_using_it():
    template = MessageTemplateFactory(name="Trial", channel="in_app", locale="en", title="t", body="Come back")
    CampaignFactory(channels=["in_app"], in_app_template=template, offer=OfferFactory(), when_budget_exhausted="skip")
    exported = MessageTemplateResource().export()
    assert dict(zip(exported.headers, exported[0]))["locale"] == "en"

    data = tablib.Dataset(headers=["name", "channel", "locale", "title", "body"])
    data.append(["Trial", "in_app", "en", "t", "{{ offer.trial_days }}-day trial"])  # the campaign's offer is a coupon
    result = MessageTemplateResource().import_data(data, dry_run=False)

    assert result.has_validation_errors()
    assert "offer.trial_days" in str(result.invalid_rows[0].error_dict)
    template.refresh_from_db()
    assert (template.body, template.locale) == ("Come back", "en")


def test_import_redemptions_command(tmp_path, capsys):
    grant = OfferGrantFactory()
    path = tmp_path / "r.csv"
    path.write_text(f"code,external_id\n{grant.code},{grant.customer.external_id}\n{grant.code},{grant.customer.external_id}\n")
    call_command("import_redemptions", str(path))
    out, err = capsys.readouterr()
    assert out.strip() == "created=1 refused=1 invalid=0"
    assert "line 3: already_redeemed" in err
    assert Redemption.objects.get().source == "import"
    with pytest.raises(CommandError):
        call_command("import_redemptions", str(tmp_path / "missing.csv"))
