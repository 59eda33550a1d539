"""The contact policy row and one policy per channel, with the playbook's defaults.

Email and in-app: at most 2 marketing messages per customer in a rolling 7 days, any hour.
SMS: the same cap, and only 08:00-21:00 in the customer's time zone (China's rule; the US one
is the same window). get_or_create: a policy already edited in the admin is left alone.
"""

from datetime import time

from django.db import migrations

CHANNEL_DEFAULTS = {
    "email": {"cap_count": 2, "cap_days": 7, "quiet_hours_enabled": False},
    "sms": {"cap_count": 2, "cap_days": 7, "quiet_hours_enabled": True},
    "in_app": {"cap_count": 2, "cap_days": 7, "quiet_hours_enabled": False},
}


def forwards(apps, schema_editor):
    using = schema_editor.connection.alias
    ContactPolicy = apps.get_model("campaigns", "ContactPolicy")
    ChannelPolicy = apps.get_model("campaigns", "ChannelPolicy")
    ContactPolicy.objects.using(using).get_or_create(pk=1)
    for channel, defaults in CHANNEL_DEFAULTS.items():
        ChannelPolicy.objects.using(using).get_or_create(
            channel=channel, defaults={**defaults, "window_start": time(8, 0), "window_end": time(21, 0)}
        )


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0002_run_counters_due_index")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
