"""A rate limit per API token: a leaked or runaway key cannot flood the API.

Counted in the cache (Redis when configured, so shared by every web process; per process with
the local-memory cache). Over the limit the API answers 429 with Retry-After.
"""

from rest_framework.throttling import SimpleRateThrottle


class TokenRateThrottle(SimpleRateThrottle):
    scope = "api_token"

    def get_cache_key(self, request, view):
        token = request.auth
        if token is None:
            return None  # refused by authentication anyway
        return self.cache_format % {"scope": self.scope, "ident": token.prefix}
