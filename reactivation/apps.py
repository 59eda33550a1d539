from django.apps import AppConfig


class ReactivationConfig(AppConfig):
    name = "reactivation"
    verbose_name = "Customers and segments"
