"""core management commands: ensure_demo_superuser."""

import io
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def demo_settings(settings, tmp_path, monkeypatch):
    settings.DEBUG = True
    settings.VAR_DIR = tmp_path / "var"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    monkeypatch.delenv("DEMO_ADMIN_PASSWORD", raising=False)
    monkeypatch.delenv("PORT", raising=False)
    return settings


def run(*args) -> str:
    out = io.StringIO()
    call_command("ensure_demo_superuser", *args, stdout=out)
    return out.getvalue()


def summary(output: str) -> dict:
    last = output.strip().splitlines()[-1]
    return dict(pair.split("=", 1) for pair in last.split())


def printed_password(output: str) -> str:
    line = next(line for line in output.splitlines() if line.strip().startswith("Password:"))
    return line.split(":", 1)[1].strip()


def test_creates_a_superuser_and_prints_url_and_credentials(demo_settings):
    output = run("--port", "8123")

    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff and user.is_active
    password = printed_password(output)
    assert len(password) >= 16
    assert user.check_password(password)
    assert "http://localhost:8123/admin/" in output
    assert summary(output) == {
        "username": "admin", "created": "1", "password_changed": "0", "privileges_restored": "0",
        "password_source": "file", "url": "http://localhost:8123/admin/",
    }


def test_generated_password_is_kept_private_and_reused(demo_settings):
    first = run()
    second = run()

    path = demo_settings.VAR_DIR / "demo-admin-password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert printed_password(first) == printed_password(second) == path.read_text().strip()
    assert summary(second)["created"] == "0"
    assert get_user_model().objects.filter(username="admin").count() == 1


def test_port_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PORT", "9001")

    output = run()

    assert summary(output)["url"] == "http://localhost:9001/admin/"


def test_password_from_the_environment_wins(monkeypatch):
    run()
    monkeypatch.setenv("DEMO_ADMIN_PASSWORD", "correct-horse-battery")

    output = run()

    assert printed_password(output) == "correct-horse-battery"
    assert get_user_model().objects.get(username="admin").check_password("correct-horse-battery")
    assert summary(output)["password_changed"] == "1"
    assert summary(output)["password_source"] == "env"
    # and a third run with the same environment changes nothing
    assert summary(run())["password_changed"] == "0"


def test_a_password_changed_by_hand_is_not_overwritten_or_printed():
    run()
    user = get_user_model().objects.get(username="admin")
    user.set_password("chosen-by-the-developer")
    user.save()

    output = run()

    user.refresh_from_db()
    assert user.check_password("chosen-by-the-developer")
    assert "Password: unchanged" in output
    assert summary(output)["password_changed"] == "0"


def test_reset_password_sets_the_demo_password_again():
    first = run()
    user = get_user_model().objects.get(username="admin")
    user.set_password("chosen-by-the-developer")
    user.save()

    output = run("--reset-password")

    user.refresh_from_db()
    assert user.check_password(printed_password(first))
    assert summary(output)["password_changed"] == "1"


def test_existing_staff_user_gets_superuser_rights_back():
    UserFactory(username="admin", is_staff=False, is_superuser=False)

    output = run()

    user = get_user_model().objects.get(username="admin")
    assert user.is_superuser and user.is_staff
    assert summary(output)["privileges_restored"] == "1"


def test_refuses_with_debug_off(demo_settings):
    demo_settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG is off"):
        run()

    assert not get_user_model().objects.filter(username="admin").exists()
    assert not (demo_settings.VAR_DIR / "demo-admin-password").exists()


def test_force_runs_with_debug_off(demo_settings):
    demo_settings.DEBUG = False

    output = run("--force")

    assert summary(output)["created"] == "1"


def test_bad_port_in_the_environment_is_refused(monkeypatch):
    monkeypatch.setenv("PORT", "eighty")

    with pytest.raises(CommandError, match="PORT must be a number"):
        run()
