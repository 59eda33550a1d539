"""Marketers read the offer grants and redemptions of their campaigns (view only: both are
written by the pipeline and the redemption API). The customer timeline shows grants and
redemptions only to staff with these permissions."""

from django.db import migrations

from core.migrations._group_permissions import ensure_permissions, grant_group_permissions

GROUPS = {
    "Marketer": {
        "campaigns.offergrant": ["view"],
        "campaigns.redemption": ["view"],
    },
}


def forwards(apps, schema_editor):
    using = schema_editor.connection.alias
    ensure_permissions(apps, ["campaigns"], using=using)
    grant_group_permissions(apps, GROUPS, using=using)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0015_campaign_reentry_days_max"),
        ("core", "0001_groups"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
