"""Category keys: their display labels, as messages show them, and the key a written name
stands for, as imports read them.

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


def category_keys_by_name() -> dict[str, str]:
    """Every name a category goes by, casefolded, to its key: the key itself and both labels.

    Files exported by a shop's own system say "美妆" or "Beauty" where segments and offers use
    the key "beauty". One SELECT, read fresh (an import must see a category added a minute ago).
    A key wins over another category's label of the same spelling.
    """
    names: dict[str, str] = {}
    categories = list(Category.objects.order_by("key").values_list("key", "label_zh_hans", "label_en"))
    for key, label_zh_hans, label_en in categories:
        for label in (label_zh_hans, label_en):
            if label.strip():
                names.setdefault(label.strip().casefold(), key)
    for key, _zh, _en in categories:
        names[key.casefold()] = key
    return names
