from datetime import timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
from django.utils import timezone

from config.celery import app
from reactivation import tasks
from reactivation.models import DormancyRule, LifecycleState, LifecycleTransition
from tests.factories import CustomerFactory, DormancyRuleFactory


def test_tasks_are_registered_under_the_names_beat_uses():
    app.loader.import_default_modules()
    assert tasks.lifecycle_evaluate_task.name == "reactivation.lifecycle_evaluate"
    assert tasks.rfm_recompute_task.name == "reactivation.rfm_recompute"
    assert {"reactivation.lifecycle_evaluate", "reactivation.rfm_recompute"} <= set(app.tasks)


def test_lifecycle_task_only_calls_the_service():
    with patch("reactivation.tasks.lifecycle_evaluate", autospec=True, return_value={"total": 0}) as service:
        assert tasks.lifecycle_evaluate_task.apply().get() == {"total": 0}
    service.assert_called_once_with()


def test_rfm_task_only_calls_the_service():
    with patch("reactivation.tasks.rfm_recompute", autospec=True, return_value=7) as service:
        assert tasks.rfm_recompute_task.apply().get() == 7
    service.assert_called_once_with()


@pytest.mark.django_db
def test_lifecycle_task_evaluates_now_and_is_safe_to_run_twice():
    DormancyRuleFactory(signal=DormancyRule.Signal.LAST_ORDER, inactive_days=90, at_risk_days=None)
    customer = CustomerFactory(lifecycle_state=LifecycleState.ACTIVE, order_count=1,
                               last_order_at=timezone.now() - timedelta(days=91))
    first = tasks.lifecycle_evaluate_task.apply().get()
    second = tasks.lifecycle_evaluate_task.apply().get()
    customer.refresh_from_db()
    assert customer.lifecycle_state == LifecycleState.DORMANT
    assert (first["dormant"], second["total"]) == (1, 0)
    assert LifecycleTransition.objects.count() == 1


@pytest.mark.django_db
def test_rfm_task_scores_buyers():
    buyer = CustomerFactory(order_count=2, total_spent=Decimal("20"), last_order_at=timezone.now())
    CustomerFactory(order_count=0)
    assert tasks.rfm_recompute_task.apply().get() == 1
    buyer.refresh_from_db()
    assert (buyer.rfm_recency, buyer.rfm_frequency, buyer.rfm_monetary) == (5, 5, 5)
