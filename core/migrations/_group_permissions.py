"""Helpers for data migrations that create staff groups and grant them permissions.

Not a migration (the loader skips modules starting with "_"). Each migration keeps its own,
frozen definitions and calls these helpers; a later app adds to the groups the same way, e.g.
in campaigns/migrations/00xx_group_permissions.py::

    from core.migrations._group_permissions import ensure_permissions, grant_group_permissions

    def forwards(apps, schema_editor):
        ensure_permissions(apps, ["campaigns"])
        grant_group_permissions(apps, {"Marketer": {"campaigns.campaign": ["add", "change", "view"]}},
                                using=schema_editor.connection.alias)

with a dependency on ("core", "0001_groups").
"""

DEFAULT_ACTIONS = ("add", "change", "delete", "view")


def ensure_permissions(apps, app_labels, *, using="default"):
    """Create the content types and permissions of ``app_labels`` now.

    Django creates them in post_migrate, i.e. after every migration of the run; a data migration
    that grants them on a fresh database would find none.
    """
    from django.contrib.auth.management import create_permissions

    for label in app_labels:
        app_config = apps.get_app_config(label)
        # create_permissions skips app configs without models_module; the migration state's
        # stubs have none, though their models are all there.
        app_config.models_module = True
        try:
            create_permissions(app_config, apps=apps, verbosity=0, using=using)
        finally:
            app_config.models_module = None


def codename_for(action: str, model: str) -> str:
    """"view" on "customer" -> "view_customer"; a custom codename is taken as is."""
    return f"{action}_{model}" if action in DEFAULT_ACTIONS else action


def grant_group_permissions(apps, definitions: dict[str, dict[str, list[str]]], *, using="default"):
    """Create each group if needed and add the listed permissions (never removes any).

    ``definitions``: ``{group: {"app_label.model": [action or custom codename, ...]}}``.
    A permission that does not exist is an error: a typo must not silently grant nothing.
    """
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group_name, grants in definitions.items():
        group, _ = Group.objects.using(using).get_or_create(name=group_name)
        for model_label, actions in grants.items():
            app_label, model = model_label.lower().split(".")
            codenames = {codename_for(action, model) for action in actions}
            permissions = list(
                Permission.objects.using(using).filter(
                    content_type__app_label=app_label, content_type__model=model, codename__in=codenames
                )
            )
            missing = codenames - {permission.codename for permission in permissions}
            if missing:
                raise LookupError(f"Group {group_name!r}: no permission {sorted(missing)} on {model_label}.")
            group.permissions.add(*permissions)
