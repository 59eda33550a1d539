"""The delivery and run lists: filters that never read the deliveries to list their choices, an
exact search, a title naming customer and campaign, and why a skipped delivery was skipped."""

from datetime import datetime, timedelta, timezone as dt_timezone

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns.materialize import run_materialize
from campaigns.models import CampaignRun, Delivery
from consent.models import Suppression
from consent.services import consent_grant, consent_withdraw
from tests.campaigns.pipeline_helpers import campaign_for, customers_with_consent, new_run
from tests.factories import CustomerFactory, SuppressionFactory, UserFactory

pytestmark = pytest.mark.django_db

LIST = "admin:campaigns_delivery_changelist"
NOV_2 = datetime(2026, 11, 2, 9, 0, tzinfo=dt_timezone.utc)




def delivery(*, campaign, run, customer=None, **fields):
    return Delivery.objects.create(campaign=campaign, run=run, customer=customer or CustomerFactory(), **fields)


def delivery_queries(captured):
    return [q["sql"] for q in captured.captured_queries if Delivery._meta.db_table in q["sql"]]


# Title ----------------------------------------------------------------------------------------


def test_a_deliverys_title_names_its_campaign_and_customer(superuser_client):
    campaign = campaign_for(name="Spring win-back")
    customer = CustomerFactory(external_id="C-2646", name="王芳")
    skipped = delivery(campaign=campaign, run=new_run(campaign), customer=customer, status="skipped",
                       skip_reason="suppressed")

    page = superuser_client.get(reverse("admin:campaigns_delivery_change", args=[skipped.pk])).content.decode()

    assert str(skipped) == "Spring win-back → 王芳 (C-2646) (skipped: suppressed)"
    assert "Spring win-back → 王芳 (C-2646) (skipped: suppressed)" in page
    nameless = delivery(campaign=campaign, run=new_run(campaign), customer=CustomerFactory(external_id="C-7", name=""))
    assert str(nameless) == "Spring win-back → C-7 (pending)"


def test_the_list_reads_campaign_run_and_customer_in_the_same_query_whatever_the_rows(superuser_client):
    campaign = campaign_for()
    run = new_run(campaign)
    delivery(campaign=campaign, run=run)
    with CaptureQueriesContext(connection) as one:
        superuser_client.get(reverse(LIST))
    for _ in range(6):
        other = campaign_for()
        delivery(campaign=other, run=new_run(other))
    with CaptureQueriesContext(connection) as seven:
        response = superuser_client.get(reverse(LIST))

    assert len(response.context["cl"].result_list) == 7
    assert len(seven.captured_queries) == len(one.captured_queries)


# Filters and search ---------------------------------------------------------------------------


def test_deliveries_filter_by_campaign_run_channel_status_and_reason(superuser_client):
    spring, summer = campaign_for(name="Spring"), campaign_for(name="Summer")
    first, second = new_run(spring), new_run(spring)
    sent = delivery(campaign=spring, run=first, channel="email", status="sent")
    capped = delivery(campaign=spring, run=second, channel="sms", status="skipped", skip_reason="cap")
    summers = delivery(campaign=summer, run=new_run(summer), channel="email", status="skipped", skip_reason="consent")

    def listed(**params):
        response = superuser_client.get(reverse(LIST), params)
        assert response.status_code == 200, params
        return {row.pk for row in response.context["cl"].result_list}

    assert listed(campaign__id__exact=spring.pk) == {sent.pk, capped.pk}
    assert listed(run__id__exact=second.pk) == {capped.pk}
    assert listed(channel__exact="email") == {sent.pk, summers.pk}
    assert listed(status__exact="skipped") == {capped.pk, summers.pk}
    assert listed(skip_reason__exact="consent") == {summers.pk}
    assert listed(campaign__id__exact=spring.pk, status__exact="skipped") == {capped.pk}


def test_a_runs_deliveries_are_listed_newest_first_without_walking_the_primary_key(superuser_client):
    campaign = campaign_for()
    run, later = new_run(campaign), new_run(campaign)
    rows = [delivery(campaign=campaign, run=run) for _ in range(3)]
    delivery(campaign=campaign, run=later)

    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(reverse(LIST), {"run__id__exact": run.pk})

    assert [row.pk for row in response.context["cl"].result_list] == [d.pk for d in reversed(rows)]
    page_query = [sql for sql in delivery_queries(captured) if "ORDER BY" in sql][-1]
    assert '"campaigns_delivery"."id" + 0) DESC' in page_query or '"campaigns_delivery"."id" + 0 DESC' in page_query


def test_the_run_filter_lists_the_chosen_campaigns_runs_from_the_runs_table(superuser_client):
    spring, summer = campaign_for(name="Spring"), campaign_for(name="Summer")
    spring_runs = [new_run(spring), new_run(spring)]
    summer_run = new_run(summer)
    for run in (*spring_runs, summer_run):
        delivery(campaign=run.campaign, run=run)

    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(reverse(LIST), {"campaign__id__exact": spring.pk})

    run_filter = next(spec for spec in response.context["cl"].filter_specs if spec.title == "run")
    assert [value for value, _label in run_filter.lookup_choices] == [str(r.pk) for r in reversed(spring_runs)]
    # No filter reads the deliveries for its choices (no DISTINCT over millions of rows), and
    # the list counts no more than the page needs: only the rows query and a bounded count.
    sqls = delivery_queries(captured)
    assert not any("DISTINCT" in sql.upper() for sql in sqls), sqls
    assert len(sqls) == 2, sqls


@pytest.mark.parametrize("query, listed", [
    ({"run__id__exact": "²"}, 0),  # str.isdigit() says yes, int() says no
    ({"run__id__exact": "١"}, 0),  # an Arabic-Indic one
    ({"run__id__exact": "99999999999999999999"}, 0),
    ({"campaign__id__exact": "²"}, 1),  # Django's campaign filter ignores it; the run filter too
])
def test_a_run_or_campaign_id_that_is_not_a_plain_number_is_no_error(superuser_client, query, listed):
    campaign = campaign_for(name="Spring")
    run = new_run(campaign)
    delivery(campaign=campaign, run=run)

    response = superuser_client.get(reverse(LIST), query)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == listed


def test_the_unfiltered_list_and_its_filters_do_not_count_facets(superuser_client):
    campaign = campaign_for()
    delivery(campaign=campaign, run=new_run(campaign))
    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(reverse(LIST), {"_facets": "True"})
    assert response.status_code == 200
    # The page and one count (an estimate on a large table): no count per filter choice.
    sqls = delivery_queries(captured)
    assert sum("COUNT(" in sql.upper() for sql in sqls) <= 1, sqls
    assert not any("GROUP BY" in sql.upper() or "FILTER (WHERE" in sql.upper() for sql in sqls), sqls


def test_search_is_an_exact_match_on_the_customers_external_id(superuser_client):
    campaign = campaign_for()
    run = new_run(campaign)
    wanted = delivery(campaign=campaign, run=run, customer=CustomerFactory(external_id="C-100"))
    delivery(campaign=campaign, run=run, customer=CustomerFactory(external_id="C-1000"))
    delivery(campaign=campaign, run=run, customer=CustomerFactory(external_id="c-100x"))

    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(reverse(LIST), {"q": " C-100 "})

    assert [row.pk for row in response.context["cl"].result_list] == [wanted.pk]
    assert superuser_client.get(reverse(LIST), {"q": "c-100"}).context["cl"].result_list.count() == 0
    # An equality the unique index on external_id serves, not UPPER(...) = UPPER(...)
    assert not any("UPPER" in sql for sql in delivery_queries(captured))


def test_runs_filter_by_campaign(superuser_client):
    spring, summer = campaign_for(name="Spring"), campaign_for(name="Summer")
    run = new_run(spring)
    new_run(summer)
    response = superuser_client.get(reverse("admin:campaigns_campaignrun_changelist"), {"campaign__id__exact": spring.pk})
    assert [r.pk for r in response.context["cl"].result_list] == [run.pk]


@pytest.mark.postgres
def test_a_filtered_count_beyond_the_exact_limit_is_the_planners_estimate(superuser_client, monkeypatch):
    monkeypatch.setattr("campaigns.admin.deliveries.FILTERED_EXACT_COUNT_LIMIT", 2)
    campaign = campaign_for()
    run = new_run(campaign)
    for _ in range(5):
        delivery(campaign=campaign, run=run, status="sent")
    delivery(campaign=campaign, run=run, status="pending")

    with CaptureQueriesContext(connection) as captured:
        response = superuser_client.get(reverse(LIST), {"status__exact": "sent"})

    assert response.context["cl"].result_count >= 3  # at least the rows counted, then the estimate
    assert any("LIMIT 3" in sql for sql in delivery_queries(captured))
    assert any(sql.startswith("EXPLAIN") for sql in delivery_queries(captured))
    few = superuser_client.get(reverse(LIST), {"status__exact": "pending"})
    assert few.context["cl"].result_count == 1


# Why skipped ----------------------------------------------------------------------------------


def test_a_delivery_skipped_at_materialization_for_a_suppressed_address_says_which_and_why(client):
    # given a customer whose email hard-bounced on 2 November, targeted by an email campaign
    customer = customers_with_consent(1, email="chen.li@example.com")[0]
    SuppressionFactory(channel="email", address="chen.li@example.com", reason=Suppression.Reason.HARD_BOUNCE,
                       created_at=NOV_2)
    campaign = campaign_for()
    run_materialize(run=new_run(campaign))
    skipped = Delivery.objects.get(customer=customer)
    assert (skipped.status, skipped.skip_reason, skipped.channel, skipped.address) == ("skipped", "suppressed", "", "")
    url = reverse("admin:campaigns_delivery_change", args=[skipped.pk])

    # when a marketer (no personal-data permission) and a superuser open it
    marketer = UserFactory()
    marketer.groups.add(Group.objects.get(name="Marketer"))
    client.force_login(marketer)
    masked = client.get(url).content.decode()
    client.force_login(UserFactory(is_superuser=True))
    full = client.get(url).content.decode()

    # then both read the channel, the address as they may see it, the reason and the date
    assert "suppressed: email c***@e***.com (hard bounce, 2026-11-02)" in masked
    assert "chen.li@example.com" not in masked
    assert "suppressed: email chen.li@example.com (hard bounce, 2026-11-02)" in full


def test_a_delivery_skipped_at_claim_names_the_address_it_was_chosen_for(superuser_client):
    campaign = campaign_for(channels=("sms",))
    customer = CustomerFactory(phone="+8613800000000")
    SuppressionFactory(channel="sms", address="+8613812345678", reason=Suppression.Reason.COMPLAINT, created_at=NOV_2)
    skipped = delivery(campaign=campaign, run=new_run(campaign), customer=customer, channel="sms",
                       address="+8613812345678", status="skipped", skip_reason="suppressed")

    page = superuser_client.get(reverse("admin:campaigns_delivery_change", args=[skipped.pk])).content.decode()

    assert "suppressed: SMS +8613812345678 (complaint, 2026-11-02)" in page
    assert "+8613800000000" not in page  # the customer's phone now is not what was refused


def test_a_delivery_skipped_for_consent_says_when_it_was_withdrawn(superuser_client):
    customer = CustomerFactory()
    consent_grant(customer=customer, channel="email", source="signup", at=NOV_2 - timedelta(days=30))
    consent_withdraw(customer=customer, channel="email", source="unsubscribe_link", at=NOV_2)
    campaign = campaign_for(channels=("email", "sms"), sms_template=None)
    skipped = delivery(campaign=campaign, run=new_run(campaign), customer=customer, status="skipped",
                       skip_reason="consent")

    page = superuser_client.get(reverse("admin:campaigns_delivery_change", args=[skipped.pk])).content.decode()

    assert "no consent: email (withdrawn 2026-11-02, unsubscribe link)" in page
    assert "no consent: SMS (never given)" in page


def test_why_skipped_is_shown_only_for_skipped_deliveries(superuser_client):
    campaign = campaign_for()
    sent = delivery(campaign=campaign, run=new_run(campaign), status="sent")
    page = superuser_client.get(reverse("admin:campaigns_delivery_change", args=[sent.pk])).content.decode()
    assert "Why skipped" not in page


def test_a_run_links_to_its_deliveries_through_the_run_filter(superuser_client):
    campaign = campaign_for()
    run = new_run(campaign)
    listing = superuser_client.get(reverse("admin:campaigns_campaignrun_changelist")).content.decode()
    assert f"?run__id__exact={run.pk}" in listing
    assert CampaignRun.objects.count() == 1
