from django.urls import path

from campaigns.api import views

urlpatterns = [
    path("customers/<str:external_id>/inbox/", views.InboxListView.as_view(), name="api-inbox"),
    path("customers/<str:external_id>/inbox/<int:message_id>/read/", views.InboxReadView.as_view(), name="api-inbox-read"),
    path("redemptions/", views.RedemptionCreateView.as_view(), name="api-redemptions"),
    path("events/", views.EventsView.as_view(), name="api-events"),
]
