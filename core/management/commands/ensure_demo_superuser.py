"""`manage.py ensure_demo_superuser`: the staff login that `make run` prints. Development only."""

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

PASSWORD_ENV = "DEMO_ADMIN_PASSWORD"
PASSWORD_FILE = "demo-admin-password"


class Command(BaseCommand):
    help = (
        "Create the demo superuser (default 'admin') if missing and print the admin URL and credentials. "
        f"The password is ${PASSWORD_ENV} when set, else generated once and kept in VAR_DIR/{PASSWORD_FILE}. "
        "Refuses to run with DEBUG off unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--port", type=int, default=None, help="Port in the printed URL (default $PORT or 8000).")
        parser.add_argument("--force", action="store_true", help="Run even with DEBUG off (a known password in production is a hole).")
        parser.add_argument(
            "--reset-password", action="store_true",
            help="Set the password even when the user exists with a password this command did not set.",
        )

    def handle(self, *args, username, port, force, reset_password, **options):
        if not settings.DEBUG and not force:
            raise CommandError("DEBUG is off: refusing to create a demo superuser with a printed password (use --force).")
        if port is None:
            port = _port_from_env()
        password, source = _demo_password()

        User = get_user_model()
        with transaction.atomic():
            user = User.objects.select_for_update().filter(username=username).first()
            created = user is None
            if created:
                user = User.objects.create_superuser(username=username, email=f"{username}@localhost", password=password)
            privileges_restored = _privileges_restore(user)
            known = created or user.check_password(password)
            password_changed = False
            if not known and (source == "env" or reset_password):
                user.set_password(password)
                user.save(update_fields=["password"])
                known = password_changed = True

        url = f"http://localhost:{port}/admin/"
        self.stdout.write("")
        self.stdout.write(f"  Admin:    {url}")
        self.stdout.write(f"  Username: {username}")
        if known:
            self.stdout.write(f"  Password: {password}")
        else:
            self.stdout.write(
                "  Password: unchanged (someone set it after this command did); "
                f"set {PASSWORD_ENV} or run with --reset-password to reset it"
            )
        self.stdout.write("")
        self.stdout.write(
            f"username={username} created={int(created)} password_changed={int(password_changed)} "
            f"privileges_restored={int(privileges_restored)} password_source={source} url={url}"
        )


def _port_from_env() -> int:
    raw = os.environ.get("PORT") or "8000"
    try:
        return int(raw)
    except ValueError:
        raise CommandError(f"PORT must be a number; got {raw!r}.") from None


def _demo_password() -> tuple[str, str]:
    """The password to use and where it came from: "env" or "file" (generated on first use)."""
    from_env = os.environ.get(PASSWORD_ENV, "")
    if from_env:
        return from_env, "env"
    path = Path(settings.VAR_DIR) / PASSWORD_FILE
    if path.exists():
        stored = path.read_text(encoding="utf-8").strip()
        if stored:
            return stored, "file"
    password = secrets.token_urlsafe(12)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Readable by this user only: it is a superuser password, even if only a demo's.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    return password, "file"


def _privileges_restore(user) -> bool:
    """A demo admin that lost staff or superuser rights gets them back (the URL must work)."""
    if user.is_active and user.is_staff and user.is_superuser:
        return False
    user.is_active = user.is_staff = user.is_superuser = True
    user.save(update_fields=["is_active", "is_staff", "is_superuser"])
    return True
