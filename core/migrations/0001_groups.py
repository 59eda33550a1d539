"""Staff groups: "Marketer" and "Compliance" (issue 2).

Marketer: reads customers and their history, builds segments and dormancy rules, reads consent;
never sees raw email/phone and has nothing to do with periodic tasks (django_celery_beat).
Compliance: records consent decisions, manages suppressions and SMS replies, reads customers
with their personal data.

Later migrations extend these groups with core.migrations._group_permissions (see there).
"""

from django.db import migrations

from core.migrations._group_permissions import ensure_permissions, grant_group_permissions

ALL = ["add", "change", "delete", "view"]

GROUPS = {
    "Marketer": {
        "reactivation.customer": ["view"],
        "reactivation.activityevent": ["view"],
        "reactivation.lifecycletransition": ["view"],
        "reactivation.dormancyreason": ["view"],
        "reactivation.segment": ALL,
        "reactivation.dormancyrule": ALL,
        "consent.consentevent": ["view"],
        "consent.consentstate": ["view"],
        "consent.suppression": ["view"],
        "consent.smsreply": ["view"],
    },
    "Compliance": {
        "consent.consentevent": ["add", "view"],
        "consent.consentstate": ["view"],
        "consent.suppression": ALL,
        "consent.smsreply": ALL,
        "reactivation.customer": ["view", "view_personal_data"],
        "reactivation.activityevent": ["view"],
        "reactivation.lifecycletransition": ["view"],
        "reactivation.dormancyreason": ["view"],
    },
}


def forwards(apps, schema_editor):
    using = schema_editor.connection.alias
    ensure_permissions(apps, ["reactivation", "consent"], using=using)
    grant_group_permissions(apps, GROUPS, using=using)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name__in=GROUPS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("reactivation", "0001_initial"),
        ("consent", "0002_ledger_append_only"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
