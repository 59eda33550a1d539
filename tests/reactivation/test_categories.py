"""Category keys and the names they go by (reactivation.categories)."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from reactivation.categories import category_keys_by_name
from reactivation.models import Category

pytestmark = pytest.mark.django_db


def test_a_key_and_both_labels_name_the_category_in_any_case():
    Category.objects.create(key="beauty", label_zh_hans="美妆", label_en="Beauty")
    Category.objects.create(key="Home", label_zh_hans="家居", label_en="Home & Living")

    assert category_keys_by_name() == {
        "beauty": "beauty", "美妆": "beauty",
        "home": "Home", "家居": "Home", "home & living": "Home",
    }


def test_a_key_wins_over_another_categorys_label_of_the_same_spelling():
    Category.objects.create(key="sport", label_zh_hans="运动", label_en="Outdoor")
    Category.objects.create(key="outdoor", label_zh_hans="户外", label_en="Camping")

    names = category_keys_by_name()

    assert names["outdoor"] == "outdoor" and names["运动"] == "sport"


def test_the_names_are_read_in_one_query_and_fresh_each_time():
    with CaptureQueriesContext(connection) as queries:
        assert category_keys_by_name() == {}
    Category.objects.create(key="books", label_zh_hans="图书", label_en="Books")

    assert len(queries) == 1
    assert category_keys_by_name()["图书"] == "books"
