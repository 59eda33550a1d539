"""Marketers build and run campaigns: campaigns, templates and offers (add, change, view),
runs and deliveries (view; they are written by the pipeline only), contact and channel
policies (view; Compliance-level decisions are changed by superusers)."""

from django.db import migrations

from core.migrations._group_permissions import ensure_permissions, grant_group_permissions

GROUPS = {
    "Marketer": {
        "campaigns.campaign": ["add", "change", "view"],
        "campaigns.campaignrun": ["view"],
        "campaigns.delivery": ["view"],
        "campaigns.messagetemplate": ["add", "change", "view"],
        "campaigns.offer": ["add", "change", "view"],
        "campaigns.contactpolicy": ["view"],
        "campaigns.channelpolicy": ["view"],
    },
}


def forwards(apps, schema_editor):
    using = schema_editor.connection.alias
    ensure_permissions(apps, ["campaigns"], using=using)
    grant_group_permissions(apps, GROUPS, using=using)


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_default_policies"),
        ("core", "0001_groups"),
    ]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
