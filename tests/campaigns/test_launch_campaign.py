"""manage.py launch_campaign: the summary line, --sync, refusals."""

from io import StringIO

import pytest
from django.core import mail
from django.core.management import CommandError, call_command

from campaigns.models import Campaign, Delivery
from consent.services import consent_withdraw
from tests.campaigns.pipeline_helpers import (
    campaign_for, customers_with_consent,
)
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def launch(*args):
    out = StringIO()
    call_command("launch_campaign", *args, stdout=out)
    return out.getvalue().strip()


def test_sync_launch_by_name_sends_and_prints_the_summary_line():
    sent, opted_out = customers_with_consent(2)
    consent_withdraw(customer=opted_out, channel="email", source="admin")
    CustomerFactory()  # never consented
    campaign = campaign_for(name="Spring win-back")

    output = launch("Spring win-back", "--sync")

    assert output == (
        "targeted=3 sent=1 skipped_consent=2 skipped_suppressed=0 skipped_cap=0 skipped_reentry=0 deferred_quiet=0 failed=0 "
        "unknown=0"
    )
    assert [m.to[0].split("<")[-1].rstrip(">") for m in mail.outbox] == [sent.email]
    assert Campaign.objects.get(pk=campaign.pk).status == "completed"


def test_launching_again_by_id_counts_reentry_and_sends_nothing_twice():
    customers_with_consent(2)
    campaign = campaign_for(reentry_days=30)
    launch(str(campaign.pk), "--sync")

    output = launch(str(campaign.pk), "--sync")

    assert output.startswith("targeted=2 sent=0 ")
    assert "skipped_reentry=2" in output
    assert len(mail.outbox) == 2
    assert Delivery.objects.filter(campaign=campaign, status="sent").count() == 2


def test_unknown_campaign_and_cancelled_campaign_are_refused():
    campaign = campaign_for(status="cancelled")

    with pytest.raises(CommandError, match="No campaign"):
        launch("nope", "--sync")
    with pytest.raises(CommandError, match="cancelled"):
        launch(campaign.name, "--sync")
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_through_the_queues_with_eager_celery(settings, monkeypatch):
    # Real commits: the tasks are queued on commit, as in production (run eagerly here).
    from config.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = True
    monkeypatch.setitem(app.conf, "task_always_eager", True)  # the app may have read its settings already
    customers_with_consent(3)
    campaign = campaign_for()

    output = launch(campaign.name, "--timeout", "5")

    assert output.startswith("targeted=3 sent=3 ")
    assert len(mail.outbox) == 3


@pytest.mark.parametrize("name", ["²", "9" * 30])
def test_a_campaign_named_by_a_number_that_is_no_id_is_refused_by_name(name):
    with pytest.raises(CommandError, match="No campaign"):
        call_command("launch_campaign", name, "--sync")
