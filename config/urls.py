from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("consent/", include("consent.urls")),
    path("offers/", include("campaigns.urls")),
    path("api/v1/", include("config.api_urls")),
]

if settings.ANYMAIL_WEBHOOK_SECRET:
    # Bounces and complaints from email providers -> consent/tracking.py -> Suppressions.
    urlpatterns.append(path("anymail/", include("anymail.urls")))

handler404 = "core.errors.not_found"
