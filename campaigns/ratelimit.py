"""A send rate per channel that holds across every worker process and machine.

Celery's ``rate_limit`` is per worker; an SMS gateway's "100 messages per second" is per
account. The count lives in the Django cache (Redis when the broker is Redis, see
settings.CACHES), in a fixed one-second window: ``cache.incr`` is atomic in Redis, so N
workers together take at most ``rate`` permits per second. With the local-memory cache (no
Redis) the limit holds per process, which is right for the single-worker development setup.

The cache may fail (Redis restarting): the error propagates from ``acquire``, and the sending
pipeline takes its permits before it hands anything to a provider, so a failure here only ever
stops messages that were not sent yet.
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

    def try_acquire(self, up_to: int = 1) -> tuple[int, float]:
        """Take up to ``up_to`` permits of the current second: (permits granted, 0.0), or
        (0, seconds to wait) when this second's are all taken."""
        if not self.per_second:
            return up_to, 0.0
        up_to = max(min(up_to, self.per_second), 1)
        now = self._clock()
        window = int(now)
        key = f"{KEY_PREFIX}:{self.channel}:{window}"
        # add() only sets a missing key; the timeout outlives the window so incr never misses it.
        cache.add(key, 0, timeout=5)
        try:
            taken = cache.incr(key, up_to)
        except ValueError:  # expired between add and incr
            cache.add(key, up_to, timeout=5)
            taken = up_to
        granted = min(up_to, self.per_second - (taken - up_to))
        if granted > 0:
            if granted < up_to:  # give back what this second cannot grant, for the other workers
                cache.decr(key, up_to - granted)
            return granted, 0.0
        return 0, max(window + 1 - now, 0.001)

    def acquire(self, up_to: int = 1) -> int:
        """Block until at least one permit is granted; return how many (1 to ``up_to``, never
        more than the rate). All permits granted at once belong to the same second."""
        while True:
            granted, wait = self.try_acquire(up_to)
            if granted:
                return granted
            self._sleep(wait)
