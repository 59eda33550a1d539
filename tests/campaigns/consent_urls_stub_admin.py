"""The project's URLs plus stub consent URL names (until the consent pages exist)."""

from django.contrib import admin
from django.urls import include, path

from tests.campaigns.consent_urls_stub import consent_patterns

urlpatterns = [
    path("admin/", admin.site.urls),
    path("consent/", include(consent_patterns)),
    path("api/v1/", include("config.api_urls")),
]
