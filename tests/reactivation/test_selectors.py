from decimal import Decimal

import pytest

from consent.services import consent_grant, consent_withdraw
from reactivation.models import DormancyReason, LifecycleState
from reactivation.selectors import customers_dormant, segment_customers, segment_sample, segment_size
from tests.factories import CustomerFactory, DormancyReasonFactory, DormancyRuleFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def members(segment):
    return set(segment_customers(segment=segment).values_list("external_id", flat=True))


def test_a_segment_without_criteria_matches_everyone():
    a, b = CustomerFactory(), CustomerFactory(lifecycle_state=LifecycleState.DORMANT)
    segment = SegmentFactory()
    assert members(segment) == {a.external_id, b.external_id}
    assert segment.customers().count() == 2


def test_lifecycle_states_match_any_listed_state():
    dormant = CustomerFactory(lifecycle_state=LifecycleState.DORMANT)
    at_risk = CustomerFactory(lifecycle_state=LifecycleState.AT_RISK)
    CustomerFactory(lifecycle_state=LifecycleState.ACTIVE)
    segment = SegmentFactory(lifecycle_states=[LifecycleState.DORMANT, LifecycleState.AT_RISK])
    assert members(segment) == {dormant.external_id, at_risk.external_id}


def test_a_lone_state_string_is_one_state_not_its_letters():
    dormant = CustomerFactory(lifecycle_state=LifecycleState.DORMANT)
    CustomerFactory(lifecycle_state=LifecycleState.NEW)
    assert members(SegmentFactory(lifecycle_states="dormant")) == {dormant.external_id}


def test_dormancy_rule_matches_the_rule_that_decided_the_state():
    app, shop = DormancyRuleFactory(), DormancyRuleFactory()
    by_app = CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=app)
    CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=shop)
    CustomerFactory(lifecycle_state=LifecycleState.ACTIVE)
    assert members(SegmentFactory(dormancy_rule=app)) == {by_app.external_id}


@pytest.mark.parametrize("score", ["recency", "frequency", "monetary"])
def test_rfm_bounds_are_inclusive_and_exclude_unscored_customers(score):
    by_score = {s: CustomerFactory(**{f"rfm_{score}": s}) for s in range(1, 6)}
    CustomerFactory()  # never ordered: no scores
    segment = SegmentFactory(**{f"rfm_{score}_min": 2, f"rfm_{score}_max": 4})
    assert members(segment) == {by_score[s].external_id for s in (2, 3, 4)}
    only_min = SegmentFactory(**{f"rfm_{score}_min": 4})
    assert members(only_min) == {by_score[s].external_id for s in (4, 5)}
    only_max = SegmentFactory(**{f"rfm_{score}_max": 1})
    assert members(only_max) == {by_score[1].external_id}


def test_spent_range_is_inclusive():
    low, mid, high = (CustomerFactory(total_spent=Decimal(v)) for v in ("99.99", "100.00", "500.01"))
    assert members(SegmentFactory(spent_min=Decimal("100"), spent_max=Decimal("500"))) == {mid.external_id}
    assert members(SegmentFactory(spent_min=Decimal("100"))) == {mid.external_id, high.external_id}
    assert members(SegmentFactory(spent_max=Decimal("100"))) == {low.external_id, mid.external_id}


def test_orders_range_is_inclusive():
    none, two, nine = (CustomerFactory(order_count=n) for n in (0, 2, 9))
    assert members(SegmentFactory(orders_min=1, orders_max=5)) == {two.external_id}
    assert members(SegmentFactory(orders_max=0)) == {none.external_id}
    assert members(SegmentFactory(orders_min=2)) == {two.external_id, nine.external_id}


def test_favourite_categories_match_any():
    beauty = CustomerFactory(favourite_category="beauty")
    mother = CustomerFactory(favourite_category="母婴")
    CustomerFactory(favourite_category="shoes")
    CustomerFactory(favourite_category="")
    assert members(SegmentFactory(favourite_categories=["beauty", "母婴"])) == {beauty.external_id, mother.external_id}


def test_locales_match_any():
    zh = CustomerFactory(locale="zh-hans")
    en = CustomerFactory(locale="en")
    CustomerFactory(locale="ja")
    assert members(SegmentFactory(locales=["zh-hans", "en"])) == {zh.external_id, en.external_id}


def test_dormancy_reasons_match_customers_with_any_of_them_once_each():
    forgot = CustomerFactory()
    DormancyReasonFactory(customer=forgot, reason=DormancyReason.Reason.FORGOT)
    DormancyReasonFactory(customer=forgot, reason=DormancyReason.Reason.FORGOT, source=DormancyReason.Source.SUPPORT)
    competitor = CustomerFactory()
    DormancyReasonFactory(customer=competitor, reason=DormancyReason.Reason.COMPETITOR)
    privacy = CustomerFactory()
    DormancyReasonFactory(customer=privacy, reason=DormancyReason.Reason.PRIVACY_CONCERN)
    CustomerFactory()  # no reason recorded
    segment = SegmentFactory(dormancy_reasons=[DormancyReason.Reason.FORGOT, DormancyReason.Reason.COMPETITOR])
    assert members(segment) == {forgot.external_id, competitor.external_id}
    assert segment_size(segment=segment) == 2  # two reasons for one customer do not count twice


def test_consent_channels_require_current_consent_on_every_channel():
    both = CustomerFactory()
    consent_grant(customer=both, channel="email", source="signup")
    consent_grant(customer=both, channel="sms", source="signup")
    email_only = CustomerFactory()
    consent_grant(customer=email_only, channel="email", source="signup")
    withdrawn = CustomerFactory()
    consent_grant(customer=withdrawn, channel="email", source="signup")
    consent_grant(customer=withdrawn, channel="sms", source="signup")
    consent_withdraw(customer=withdrawn, channel="sms", source="sms_reply")
    CustomerFactory()  # never asked
    assert members(SegmentFactory(consent_channels=["email", "sms"])) == {both.external_id}
    assert members(SegmentFactory(consent_channels=["email"])) == {
        both.external_id, email_only.external_id, withdrawn.external_id}
    assert members(SegmentFactory(consent_channels=["sms"])) == {both.external_id}
    assert members(SegmentFactory(consent_channels=["wechat"])) == set()


def test_criteria_combine_with_and():
    rule = DormancyRuleFactory()
    target = CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=rule, rfm_monetary=5,
                             total_spent=Decimal("800"), order_count=6, favourite_category="beauty", locale="zh-hans")
    consent_grant(customer=target, channel="email", source="signup")
    DormancyReasonFactory(customer=target, reason=DormancyReason.Reason.FORGOT)
    near_miss = CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=rule, rfm_monetary=5,
                                total_spent=Decimal("800"), order_count=6, favourite_category="beauty", locale="en")
    consent_grant(customer=near_miss, channel="email", source="signup")
    DormancyReasonFactory(customer=near_miss, reason=DormancyReason.Reason.FORGOT)
    segment = SegmentFactory(
        lifecycle_states=[LifecycleState.DORMANT], dormancy_rule=rule, rfm_monetary_min=4, spent_min=Decimal("500"),
        orders_min=5, favourite_categories=["beauty"], locales=["zh-hans"],
        dormancy_reasons=[DormancyReason.Reason.FORGOT], consent_channels=["email"],
    )
    assert members(segment) == {target.external_id}


def test_size_and_sample(django_assert_num_queries):
    customers = CustomerFactory.create_batch(5, lifecycle_state=LifecycleState.DORMANT)
    CustomerFactory(lifecycle_state=LifecycleState.ACTIVE)
    segment = SegmentFactory(lifecycle_states=[LifecycleState.DORMANT])
    assert segment_size(segment=segment) == 5
    with django_assert_num_queries(1):
        sample = list(segment_sample(segment=segment, limit=3))
        [c.lifecycle_rule for c in sample]
    assert [c.pk for c in sample] == [c.pk for c in reversed(customers)][:3]
    assert list(segment_sample(segment=segment, limit=0)) == []
    assert len(segment_sample(segment=segment)) == 5


def test_sample_refuses_a_negative_limit():
    with pytest.raises(ValueError):
        segment_sample(segment=SegmentFactory(), limit=-1)


def test_customers_dormant_optionally_by_rule():
    app, shop = DormancyRuleFactory(), DormancyRuleFactory()
    by_app = CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=app)
    by_shop = CustomerFactory(lifecycle_state=LifecycleState.DORMANT, lifecycle_rule=shop)
    CustomerFactory(lifecycle_state=LifecycleState.AT_RISK, lifecycle_rule=app)
    assert set(customers_dormant()) == {by_app, by_shop}
    assert list(customers_dormant(rule=app)) == [by_app]
