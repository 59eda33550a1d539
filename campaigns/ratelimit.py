"""A send rate per channel that holds across every worker process and machine.

Celery's ``rate_limit`` is per worker; an SMS gateway's "100 messages per second" is per
account. The count lives in the Django cache (Redis when the broker is Redis, see
settings.CACHES), in a fixed one-second window: ``cache.incr`` is atomic in Redis, so N
workers together take at most ``rate`` permits per second. With the local-memory cache (no
Redis) the limit holds per process, which is right for the single-worker development setup.
"""

import time

from django.core.cache import cache

KEY_PREFIX = "campaigns:rate"


class RateLimiter:
    def __init__(self, *, channel: str, per_second: int | None, clock=time.time, sleep=time.sleep):
        self.channel = channel
        self.per_second = per_second
        self._clock = clock
        self._sleep = sleep

    def try_acquire(self) -> float:
        """Take a permit: 0.0 when granted, else the seconds to wait before trying again."""
        if not self.per_second:
            return 0.0
        now = self._clock()
        window = int(now)
        key = f"{KEY_PREFIX}:{self.channel}:{window}"
        # add() only sets a missing key; the timeout outlives the window so incr never misses it.
        cache.add(key, 0, timeout=5)
        try:
            taken = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=5)
            taken = 1
        if taken <= self.per_second:
            return 0.0
        return max(window + 1 - now, 0.001)

    def acquire(self) -> None:
        """Block until a permit is granted."""
        while True:
            wait = self.try_acquire()
            if not wait:
                return
            self._sleep(wait)
