"""The admin home page: the dashboard above the list of models, each part shown only to staff
allowed to see it, computed in a bounded number of queries, cached, and working without a cache."""

import re
from datetime import UTC, datetime, timedelta
from unittest import mock
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from campaigns.models import Campaign, CampaignRun
from campaigns.services import campaign_schedule
from dashboard import views
from reactivation.models import Customer, LifecycleTransition
from tests.factories import CampaignFactory, CustomerFactory, UserFactory

pytestmark = pytest.mark.django_db

INDEX = reverse("admin:index")


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def business():
    """Customers in every state, a week of dormancy changes, a scheduled campaign and a run."""
    now = timezone.now()
    for state, n in (("new", 1), ("active", 4), ("at_risk", 2), ("dormant", 3), ("reactivated", 1)):
        for _ in range(n):
            customer = CustomerFactory(lifecycle_state=state)
            if state == "dormant":
                LifecycleTransition.objects.create(customer=customer, from_state="at_risk", to_state="dormant",
                                                   at=now - timedelta(minutes=5))
    Customer.objects.update(created_at=now - timedelta(days=200))
    campaign = CampaignFactory(name="Weekly win-back", schedule_kind=Campaign.ScheduleKind.RECURRING,
                               cron_minute="0", cron_hour="10")
    campaign_schedule(campaign=campaign)
    CampaignRun.objects.create(campaign=campaign, number=1, status=CampaignRun.Status.DONE,
                               targeted=1234, sent=1100, skipped_cap=34, holdout=60, failed=7, offers_granted=999)
    return campaign


def _staff(*permissions: str, group: str | None = None):
    user = UserFactory(username="staff-" + "-".join(p.split(".")[1] for p in permissions) + (group or ""))
    for dotted in permissions:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


def _table(html: str, table_id: str) -> list[list[str]]:
    """The rows of one table, as the text of their cells."""
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', html, re.S).group(0)
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def test_a_superuser_sees_the_business_at_a_glance_above_the_list_of_models(client, business):
    client.force_login(UserFactory(username="root", is_superuser=True))

    response = client.get(INDEX)

    html = response.content.decode()
    assert response.status_code == 200
    assert _table(html, "dashboard-lifecycle-now") == [
        ["New", "1"], ["Active", "4"], ["At risk", "2"], ["Dormant", "3"], ["Reactivated", "1"],
    ]
    weeks = _table(html, "dashboard-lifecycle-weeks")
    assert len(weeks) == 12
    assert weeks[-1][1:] == ["1", "4", "2", "3", "1"]
    assert weeks[-2][1:] == ["1", "4", "5", "0", "1"]  # the three were at risk a week ago
    assert _table(html, "dashboard-dormant-flow")[-1][1:] == ["3", "0", "+3"]
    # Three charts, each an accessible image drawn by matplotlib.
    assert len(re.findall(r'<svg id="chart-[a-z-]+" class="dashboard-chart-svg" role="img" aria-label="[^"]+"', html)) == 3
    assert "<?xml" not in html and "<metadata>" not in html
    runs = _table(html, "dashboard-runs")
    assert runs[0][0] == "Weekly win-back"
    # targeted = sent + skipped + holdout + failed + waiting, each a column
    assert runs[0][4:] == ["1,234", "1,100", "34", "60", "7", "33", "999"]
    change_url = reverse("admin:campaigns_campaign_change", args=[business.pk])
    assert f'<a href="{change_url}">Weekly win-back</a>' in html
    upcoming = _table(html, "dashboard-upcoming")
    assert upcoming[0][:3] == ["Weekly win-back", "Scheduled", "crontab 0 10 * * * (UTC)"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d 10:00", upcoming[0][3])
    assert 'id="dashboard-campaign-results"' in html and "<h2 id=\"dashboard-campaign-results-heading\">Campaign results</h2>" in html
    # The list of models is still there, below the dashboard, and the page's own heading.
    assert html.index('id="dashboard-customers"') < html.index('class="app-reactivation module')
    assert reverse("admin:reactivation_customer_changelist") in html
    assert "Bring dormant customers back" in html



def test_each_part_says_when_its_figures_were_computed_in_the_site_zone(client, business, settings):
    settings.TIME_ZONE = "Asia/Shanghai"
    client.force_login(UserFactory(username="root", is_superuser=True))
    before = timezone.localtime(timezone.now(), ZoneInfo("Asia/Shanghai"))

    html = client.get(INDEX).content.decode()

    after = timezone.localtime(timezone.now(), ZoneInfo("Asia/Shanghai"))
    notes = re.findall(r'id="dashboard-(customers|campaigns)-as-of">([^<]*)<', html)
    assert [part for part, _ in notes] == ["customers", "campaigns"]
    for _, note in notes:
        shown = re.search(r"Figures as of (\d\d:\d\d) \(Asia/Shanghai\), refreshed every minute\.", note)
        assert shown, note
        assert shown.group(1) in {before.strftime("%H:%M"), after.strftime("%H:%M")}


def test_figures_of_another_day_name_their_date():
    zone = ZoneInfo("Asia/Shanghai")
    computed = datetime(2026, 11, 30, 15, 59, 30, tzinfo=UTC)  # 23:59 in Shanghai

    same_day = views.figures_as_of(computed_at=computed, zone=zone, now=computed + timedelta(seconds=20))
    next_day = views.figures_as_of(computed_at=computed, zone=zone, now=computed + timedelta(seconds=40))

    assert same_day == "Figures as of 23:59 (Asia/Shanghai), refreshed every minute."
    assert next_day == "Figures as of 2026-11-30 23:59 (Asia/Shanghai), refreshed every minute."

def test_the_campaign_results_region_is_a_template_block_a_later_page_fills(client, business, settings, tmp_path):
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "index.html").write_text(
        '{% extends "admin/index.html" %}{% block campaign_results %}<p id="filled">uplift</p>{% endblock %}')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0]["DIRS"]]}]
    client.force_login(UserFactory(username="root", is_superuser=True))

    html = client.get(INDEX).content.decode()

    results = html[html.index('id="dashboard-campaign-results"'):]
    assert '<p id="filled">uplift</p>' in results[:results.index("</section>")]


def _queries(client) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(INDEX).status_code == 200
    return len(queries)


def test_the_home_page_takes_a_bounded_number_of_queries_whatever_the_data(
    client, business, settings, django_assert_max_num_queries,
):
    for n in range(30):
        CampaignRun.objects.create(campaign=business, number=100 + n, targeted=n)
        CampaignFactory(name=f"Running {n}", status=Campaign.Status.RUNNING)
    for customer in Customer.objects.all():
        LifecycleTransition.objects.create(customer=customer, from_state="new", to_state=customer.lifecycle_state,
                                           at=timezone.now() - timedelta(days=20))
    client.force_login(UserFactory(username="root", is_superuser=True))
    settings.ADMIN_INDEX_CONTEXT = ""
    without_dashboard = _queries(client)
    settings.ADMIN_INDEX_CONTEXT = "dashboard.views.index_context"

    # Lifecycle (3), campaigns (1), runs (1); from the cache, none.
    with django_assert_max_num_queries(without_dashboard + 5):
        assert client.get(INDEX).status_code == 200
    assert _queries(client) == without_dashboard


def test_the_figures_are_cached_for_a_minute(client, business):
    client.force_login(UserFactory(username="root", is_superuser=True))
    client.get(INDEX)
    CustomerFactory(lifecycle_state="dormant")

    cached = client.get(INDEX).content.decode()
    cache.clear()
    fresh = client.get(INDEX).content.decode()

    assert ["Dormant", "3"] in _table(cached, "dashboard-lifecycle-now")
    assert ["Dormant", "4"] in _table(fresh, "dashboard-lifecycle-now")


@pytest.mark.parametrize("failing", ["get", "set"])
def test_a_failing_cache_still_renders_the_page_from_the_database(client, business, failing, caplog):
    client.force_login(UserFactory(username="root", is_superuser=True))

    with mock.patch.object(views.cache, failing, side_effect=ConnectionError("cache down")):
        response = client.get(INDEX)

    assert response.status_code == 200
    assert ["Dormant", "3"] in _table(response.content.decode(), "dashboard-lifecycle-now")
    assert "dashboard cache" in caplog.text


def test_staff_who_may_not_view_campaigns_see_no_campaign_data(client, business):
    client.force_login(_staff("reactivation.view_customer"))

    html = client.get(INDEX).content.decode()

    assert 'id="dashboard-customers"' in html
    assert 'id="dashboard-campaigns"' not in html and 'id="dashboard-campaign-results"' not in html
    assert "Weekly win-back" not in html and "1,234" not in html


def test_staff_who_may_not_view_customers_see_no_customer_figures(client, business):
    client.force_login(_staff("campaigns.view_campaign"))

    html = client.get(INDEX).content.decode()

    assert 'id="dashboard-customers"' not in html and "dashboard-chart-svg" not in html
    assert 'id="dashboard-campaigns"' in html and "Weekly win-back" in html


def test_the_marketer_group_sees_both_parts_and_no_personal_data(client, business):
    Customer.objects.filter(lifecycle_state="new").update(name="秘密 客户", email="secret.person@example.com")
    client.force_login(_staff(group="Marketer"))

    html = client.get(INDEX).content.decode()

    assert 'id="dashboard-customers"' in html and 'id="dashboard-campaigns"' in html
    assert "secret.person" not in html and "秘密" not in html
