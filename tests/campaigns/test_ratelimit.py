"""A send rate shared by every worker (campaigns.ratelimit), counted in the cache."""

import uuid

import pytest
from django.core.cache import cache

from campaigns.ratelimit import RateLimiter


@pytest.fixture(autouse=True)
def _clear_cache(settings):
    if "locmem" in settings.CACHES["default"]["BACKEND"]:
        cache.clear()


def test_at_most_rate_permits_per_second_across_limiters_sharing_the_cache():
    CHANNEL = f"sms-{uuid.uuid4().hex}"  # unique keys: a Redis cache outlives the test
    now = [1000.25]
    worker_a = RateLimiter(channel=CHANNEL, per_second=3, clock=lambda: now[0])
    worker_b = RateLimiter(channel=CHANNEL, per_second=3, clock=lambda: now[0])

    granted = [limiter.try_acquire()[0] for limiter in (worker_a, worker_b, worker_a, worker_b)]

    assert granted == [1, 1, 1, 0]
    assert worker_a.try_acquire() == (0, pytest.approx(0.75))  # wait for the next second
    now[0] = 1001.0
    assert worker_b.try_acquire() == (1, 0.0)


def test_several_permits_at_once_are_granted_within_one_second_and_never_beyond_the_rate():
    channel = f"email-{uuid.uuid4().hex}"
    now = [20.0]
    first, second = (RateLimiter(channel=channel, per_second=10, clock=lambda: now[0]) for _ in range(2))

    assert first.try_acquire(6) == (6, 0.0)
    assert second.try_acquire(6) == (4, 0.0)  # what is left of this second
    assert first.try_acquire(6)[0] == 0
    now[0] = 21.0
    assert second.try_acquire(50) == (10, 0.0)  # never more than a second's worth


def test_acquire_sleeps_until_the_next_window_and_channels_are_independent():
    now = [50.5]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    email, sms = f"email-{uuid.uuid4().hex}", f"sms-{uuid.uuid4().hex}"
    limiter = RateLimiter(channel=email, per_second=1, clock=lambda: now[0], sleep=sleep)

    assert [limiter.acquire(), limiter.acquire(5)] == [1, 1]
    assert slept == [pytest.approx(0.5)]
    assert RateLimiter(channel=sms, per_second=1, clock=lambda: 51.0).try_acquire() == (1, 0.0)


def test_no_rate_means_no_limit():
    limiter = RateLimiter(channel="in_app", per_second=None)
    assert all(limiter.try_acquire() == (1, 0.0) for _ in range(1000))
    assert limiter.acquire(500) == 500


def test_a_cache_failure_reaches_the_caller(monkeypatch):
    # The pipeline takes its permits before it hands anything over, so it can put the messages
    # back: the limiter must not swallow the failure and grant a permit it never counted.
    def down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(cache, "add", down)
    with pytest.raises(ConnectionError):
        RateLimiter(channel=f"email-{uuid.uuid4().hex}", per_second=5).acquire(3)


@pytest.mark.broker
def test_redis_cache_shares_the_count(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": settings.CELERY_BROKER_URL}}
    channel = f"sms-{uuid.uuid4().hex}"  # no clear(): the Redis database may be shared
    first, second = (RateLimiter(channel=channel, per_second=2, clock=lambda: 7.0) for _ in range(2))
    assert [first.try_acquire()[0], second.try_acquire(5)[0], first.try_acquire()[0]] == [1, 1, 0]
