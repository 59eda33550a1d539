from django.contrib import admin

# The order a marketer works in: who the customers are, what to send, what they agreed to.
APP_ORDER = ["reactivation", "campaigns", "consent", "django_celery_beat", "auth"]


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Win-back back office"
    site_title = "Win-back back office"
    index_title = "Bring dormant customers back"

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)

        def position(app):
            label = app["app_label"]
            return (APP_ORDER.index(label) if label in APP_ORDER else len(APP_ORDER), app["name"])

        return sorted(apps, key=position)
