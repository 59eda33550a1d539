"""Error pages: the API answers in JSON whatever went wrong, the rest in HTML."""

from django.http import JsonResponse
from django.views import defaults

API_PREFIX = "/api/"


def not_found(request, exception=None):
    """handler404: a URL under /api/ that matches no route (a negative message id, a "/" inside
    an external id) gets the same JSON ``{"detail": ...}`` as a missing row, as the schema says."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"detail": "Not found."}, status=404)
    return defaults.page_not_found(request, exception)
