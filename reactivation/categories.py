"""Display labels of category keys, as messages show them.

Rendering asks for a label per message, so labels are read from the database at most once a
minute per process rather than once per message; an edit in the admin shows in messages
within that minute.
"""

import threading
import time

from reactivation.models import Category

REFRESH_SECONDS = 60

_lock = threading.Lock()
_cache: dict = {"labels": None, "loaded_at": 0.0}


def _labels() -> dict[str, Category]:
    now = time.monotonic()
    if _cache["labels"] is None or now - _cache["loaded_at"] > REFRESH_SECONDS:
        with _lock:
            _cache["labels"] = {c.key: c for c in Category.objects.all()}
            _cache["loaded_at"] = now
    return _cache["labels"]


def category_labels_forget() -> None:
    """Drop the cached labels (tests, and after an import that added categories)."""
    _cache["labels"] = None


def category_label(key: str, language: str) -> str:
    """The label of ``key`` in ``language`` ("zh-hans" or "en"), or "" when the key has no
    Category row: a raw key ("beauty") inside Chinese copy reads as a mistake, so a template's
    ``{% if favourite_category %}`` leaves the sentence out instead."""
    if not key:
        return ""
    category = _labels().get(key)
    return category.label(language) if category is not None else ""
