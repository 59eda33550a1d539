from django.urls import path

from consent import views

app_name = "consent"

urlpatterns = [
    path("unsubscribe/<str:token>/", views.unsubscribe, name="unsubscribe"),
    path("preferences/<str:token>/", views.preferences, name="preferences"),
    path("sms/inbound/", views.sms_inbound, name="sms_inbound"),
]
