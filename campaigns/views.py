"""Public pages of offers: the claim page a message links to."""

from django.http import Http404
from django.views.decorators.http import require_safe


@require_safe
def claim(request, token: str):
    raise Http404
