from django.urls import path

from campaigns import views

app_name = "offers"

urlpatterns = [
    path("claim/<str:token>/", views.claim, name="claim"),
]
