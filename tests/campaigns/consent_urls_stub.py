"""A URLconf with the consent URL names, for tests run before the consent pages exist."""

from django.http import HttpResponse
from django.urls import include, path


def _page(request, token):
    return HttpResponse("stub")


consent_patterns = (
    [
        path("unsubscribe/<str:token>/", _page, name="unsubscribe"),
        path("preferences/<str:token>/", _page, name="preferences"),
    ],
    "consent",
)

urlpatterns = [
    path("consent/", include(consent_patterns)),
    path("api/v1/", include("config.api_urls")),
]
