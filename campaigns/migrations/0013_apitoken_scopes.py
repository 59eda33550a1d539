"""API tokens get scopes. Tokens made before could call every endpoint and tell unknown
customers apart (404): they keep exactly those rights."""

from django.db import migrations, models

RIGHTS_BEFORE_SCOPES = ["events:write", "inbox:read", "redemptions:write", "customers:lookup"]


def existing_tokens_keep_their_rights(apps, schema_editor):
    ApiToken = apps.get_model("campaigns", "ApiToken")
    ApiToken.objects.using(schema_editor.connection.alias).update(scopes=RIGHTS_BEFORE_SCOPES)


class Migration(migrations.Migration):
    dependencies = [("campaigns", "0012_delivery_claimed_unknown_lease")]

    operations = [
        migrations.AddField(
            model_name="apitoken",
            name="scopes",
            field=models.JSONField(blank=True, default=list, help_text="ApiScope values; chosen at creation."),
        ),
        migrations.RunPython(existing_tokens_keep_their_rights, migrations.RunPython.noop),
    ]
