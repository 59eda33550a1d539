"""Masking of personal data (core.masking)."""

import pytest
from django.contrib.auth.models import AnonymousUser, Group, Permission

from core.masking import can_view_personal_data, mask_address, mask_email, mask_phone, mask_text
from tests.factories import UserFactory


@pytest.mark.parametrize(
    "value, masked",
    [
        ("zhang.wei@example.com", "z***@e***.com"),
        ("a@b.co", "a***@b***.co"),
        ("x@localhost", "x***@l***"),
        ("no-at-sign", "n***"),
        ("", ""),
    ],
)
def test_mask_email_keeps_only_first_letters_and_the_tld(value, masked):
    assert mask_email(value) == masked


@pytest.mark.parametrize(
    "value, masked",
    [("+8613812345678", "+86*******5678"), ("+14155550100", "+14*****0100"), ("1234567", "*******"), ("", "")],
)
def test_mask_phone_keeps_country_code_and_last_four(value, masked):
    assert mask_phone(value) == masked


def test_mask_address_and_text():
    assert mask_address("li@example.com") == "l***@e***.com"
    assert mask_address("+8613812345678") == "+86*******5678"
    assert mask_address("") == "" and mask_text("") == "" and mask_text("张伟") == "张***"


@pytest.mark.django_db
def test_only_staff_with_the_permission_or_superusers_can_view_personal_data():
    marketer = UserFactory(username="m")
    marketer.groups.add(Group.objects.get(name="Marketer"))
    compliance = UserFactory(username="c")
    compliance.groups.add(Group.objects.get(name="Compliance"))
    root = UserFactory(username="root", is_superuser=True)
    inactive = UserFactory(username="gone", is_active=False)
    inactive.user_permissions.add(Permission.objects.get(codename="view_personal_data"))

    assert not can_view_personal_data(marketer)
    assert can_view_personal_data(compliance)
    assert can_view_personal_data(root)
    assert not can_view_personal_data(inactive)
    assert not can_view_personal_data(AnonymousUser())
    assert not can_view_personal_data(None)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("smtp;550 5.1.1 <member000008@example.net>: Recipient address rejected",
         "smtp;550 5.1.1 <m***@e***.net>: Recipient address rejected"),
        ("找我请打 +86 138 1234 5678 或 13900001111", "找我请打 +86*******5678 或 139****1111"),
        ("mail Zhang.Wei+tag@mail.example.com.cn now", "mail Z***@m***.cn now"),
        ("on 2026-05-01, order 12345, 5.1.1", "on 2026-05-01, order 12345, 5.1.1"),
        ("", ""),
    ],
)
def test_personal_data_inside_free_text_is_masked_and_the_rest_kept(text, masked):
    from core.masking import mask_personal_text

    assert mask_personal_text(text) == masked
