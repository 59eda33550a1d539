"""Clients logged in as the roles the campaigns admin tests act as."""

import pytest
from django.contrib.auth.models import Group

from tests.factories import UserFactory


@pytest.fixture
def superuser_client(client):
    client.force_login(UserFactory(is_superuser=True))
    return client


@pytest.fixture
def admin_client(client):
    client.force_login(UserFactory(username="root", is_superuser=True))
    return client


@pytest.fixture
def marketer_client(client):
    user = UserFactory()
    user.groups.add(Group.objects.get(name="Marketer"))
    client.force_login(user)
    return client
