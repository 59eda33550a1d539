"""The back office's admin site and the building blocks every app's admin shares.

- ``BackOfficeAdminSite`` orders the index as a marketer works.
- ``LargeTableAdminMixin``: changelists of tables with millions of rows never COUNT(*) them.
- ``PersonalDataAdminMixin``: email and phone (and any other listed field) are shown masked to
  staff without ``reactivation.view_personal_data``, in list columns, detail pages and search.
- ``PersonalLookupGuardMixin`` (part of the above, usable alone): the same staff can neither
  filter nor sort a changelist by personal data through its URL.
"""

import copy

from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.db.models.constants import LOOKUP_SEP
from django import forms
from django.utils.module_loading import import_string
from import_export.admin import ImportExportModelAdmin
from import_export.forms import ImportForm
from import_export.tmp_storages import MediaStorage

from core.exports import IMPORT_EXPORT_FORMATS, ImportTooLarge
from core.masking import can_view_personal_data
from core.paginator import EstimatedCountPaginator
from core.xlsx_limits import XlsxTooLarge

# The order a marketer works in: who the customers are, what to send, what they agreed to.
APP_ORDER = ["reactivation", "campaigns", "consent", "django_celery_beat", "auth"]

# Within an app: the models a marketer opens first come first; models not listed follow,
# alphabetically.
MODEL_ORDER = {
    "reactivation": [
        "Customer",
        "Segment",
        "DormancyRule",
        "DormancyReason",
        "ActivityEvent",
        "LifecycleTransition",
        "ImportJob",
    ],
    "consent": ["ConsentEvent", "ConsentState", "Suppression", "SmsReply"],
}


def _position(order, key, name):
    return (order.index(key) if key in order else len(order), name)


class BackOfficeAdminSite(admin.AdminSite):
    site_header = "Win-back back office"
    site_title = "Win-back back office"
    index_title = "Bring dormant customers back"

    def index(self, request, extra_context=None):
        """The home page, with the context of the callable named by ADMIN_INDEX_CONTEXT
        ("dotted.path", called with the request): core names no app, the setting does.
        templates/admin/index.html draws that context above Django's list of models."""
        path = getattr(settings, "ADMIN_INDEX_CONTEXT", "")
        if path:
            extra_context = {**import_string(path)(request), **(extra_context or {})}
        return super().index(request, extra_context)

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)
        for app in apps:
            order = MODEL_ORDER.get(app["app_label"], [])
            app["models"].sort(key=lambda model: _position(order, model["object_name"], model["name"]))
        return sorted(apps, key=lambda app: _position(APP_ORDER, app["app_label"], app["name"]))


class LargeTableAdminMixin:
    """For tables that grow to millions of rows (customers, events, ledgers).

    The estimated paginator reads PostgreSQL's planner estimate instead of COUNT(*) for the
    unfiltered list, and ``show_full_result_count = False`` drops the second COUNT(*) Django
    runs for "N results (M total)" on filtered lists.
    """

    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50


# Field names holding personal data on any model of the back office (customers' email and
# phone, deliveries' and suppressions' address, SMS senders, consent evidence with IPs). A lookup
# or ordering path through any of them ("email__startswith", "customer__phone") is personal.
PERSONAL_DATA_FIELD_NAMES = frozenset({"email", "phone", "address", "sender", "evidence"})


def is_personal_lookup(path: str, personal_fields=()) -> bool:
    """Whether a lookup or ordering path ("-customer__email", "evidence__ip__startswith")
    passes through a personal-data field."""
    names = PERSONAL_DATA_FIELD_NAMES.union(personal_fields)
    return any(part in names for part in path.lstrip("-").split(LOOKUP_SEP))


class PersonalLookupGuardMixin:
    """Without ``reactivation.view_personal_data`` no changelist may be filtered or sorted by
    personal data through its URL.

    Django's ``lookup_allowed`` accepts any lookup on the model's own fields, so
    ``?email__startswith=a`` (then ``ab``, ``abc``...) would reveal a masked address one
    character at a time by which rows stay listed; sorting by it leaks the same by position.
    A refused lookup makes Django raise DisallowedModelAdminLookup (HTTP 400); a refused
    ordering is dropped (the list keeps its default order). Staff with the permission keep
    Django's own rules.
    """

    personal_data_fields: dict[str, str] = {}

    def _personal_names(self):
        return set(self.personal_data_fields) | set(self.personal_data_fields.values())

    def lookup_allowed(self, lookup, value, request):
        if not can_view_personal_data(request.user) and is_personal_lookup(lookup, self.personal_data_fields):
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_sortable_by(self, request):
        sortable = super().get_sortable_by(request)
        if can_view_personal_data(request.user):
            return sortable
        personal = self._personal_names()
        # list_display (the default sortable_by) may hold callables: only names can be personal.
        return [
            name for name in sortable
            if not isinstance(name, str) or (name not in personal and not is_personal_lookup(name))
        ]

    def get_changelist(self, request, **kwargs):
        ChangeList = super().get_changelist(request, **kwargs)
        if can_view_personal_data(request.user):
            return ChangeList
        personal_fields = tuple(self.personal_data_fields)

        class GuardedChangeList(ChangeList):
            # sortable_by only hides the column headers; "?o=N" still sorts by any column whose
            # display names an ordering. This drops orderings through personal data.
            def get_ordering_field(self, field_name):
                order_field = super().get_ordering_field(field_name)
                if isinstance(order_field, str) and is_personal_lookup(order_field, personal_fields):
                    return None
                return order_field

        return GuardedChangeList


class PersonalDataAdminMixin(PersonalLookupGuardMixin):
    """Swap personal-data fields for masked read-only displays for staff without the permission.

    ``personal_data_fields`` maps a model field to the name of a display method on the admin
    (see ``masked_display``). Every place the admin prints fields asks this mixin first:
    list columns, fields and fieldsets of the change/view page, and read-only fields. The
    form then never contains the raw field, so it can neither be shown nor blanked on save.
    """

    personal_data_fields: dict[str, str] = {}

    def _masked_names(self, request, names):
        if can_view_personal_data(request.user):
            return list(names)
        # dict.fromkeys: Django's default fields list the raw field and its masked read-only
        # display; both become the display, which must appear once.
        return list(dict.fromkeys(self.personal_data_fields.get(name, name) for name in names))

    def get_list_display(self, request):
        return self._masked_names(request, super().get_list_display(request))

    def get_list_display_links(self, request, list_display):
        links = super().get_list_display_links(request, list_display)
        return self._masked_names(request, links) if links else links

    def get_fields(self, request, obj=None):
        return self._masked_names(request, super().get_fields(request, obj))

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if can_view_personal_data(request.user):
            return fieldsets
        return [
            (title, {**options, "fields": self._masked_names(request, options.get("fields", ()))})
            for title, options in fieldsets
        ]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(super().get_readonly_fields(request, obj))
        if not can_view_personal_data(request.user):
            readonly += [name for name in self.personal_data_fields.values() if name not in readonly]
        return readonly

    def masked_copy(self, obj):
        """A copy of ``obj`` whose personal-data fields hold their masked display, for the
        page title and breadcrumbs, which print ``str(obj)`` (e.g. a suppression's address)."""
        masked = copy.copy(obj)
        for field, display in self.personal_data_fields.items():
            setattr(masked, field, getattr(self, display)(obj))
        return masked

    def _masked_object_context(self, request, object_id, extra_context, **names):
        if can_view_personal_data(request.user):
            return extra_context
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            return extra_context
        masked = self.masked_copy(obj)
        return {**(extra_context or {}), **{key: make(masked) for key, make in names.items()}}

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = self._masked_object_context(
            request, object_id, extra_context, original=lambda masked: masked, subtitle=str
        )
        return super().change_view(request, object_id, form_url, extra_context=extra_context)

    def history_view(self, request, object_id, extra_context=None):
        extra_context = self._masked_object_context(
            request, object_id, extra_context, object=lambda masked: masked,
            title=lambda masked: f"Change history: {masked}",
        )
        return super().history_view(request, object_id, extra_context=extra_context)


def masked_display(field: str, mask, description: str | None = None):
    """An admin display method showing ``field`` through ``mask`` (sortable by the field)."""

    @admin.display(description=description or field, ordering=field)
    def display(self, obj):
        return mask(getattr(obj, field))

    return display


class BoundedImportForm(ImportForm):
    """The upload form of the small-table imports: a file over ADMIN_IMPORT_MAX_BYTES is refused
    before django-import-export copies it to storage and reads it whole into memory."""

    def clean_import_file(self):
        from django.conf import settings

        upload = self.cleaned_data["import_file"]
        if upload.size > settings.ADMIN_IMPORT_MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; this import takes at most {settings.ADMIN_IMPORT_MAX_BYTES:,}. "
                "Split the file."
            )
        return upload


class ImportExportAdmin(ImportExportModelAdmin):
    """django-import-export for the small tables, configured for our files and servers.

    - Formats: our CSV (UTF-8 with/without BOM or GB18030/GBK in, UTF-8 with BOM out) and XLSX.
    - Uploads between preview and confirm live in MEDIA_ROOT (MediaStorage), which every web
      process can read; the default TempFolderStorage loses the file when the confirm request
      lands on another server.
    - Resources receive the requesting user (created_by, actor, masking of exports).
    """

    formats = IMPORT_EXPORT_FORMATS
    tmp_storage_class = MediaStorage
    import_form_class = BoundedImportForm

    def get_resource_kwargs(self, request, *args, **kwargs):
        return {**super().get_resource_kwargs(request, *args, **kwargs), "user": request.user}

    def add_data_read_fail_error_to_form(self, form, e):
        # A file over a limit says which limit; other failures keep the library's message.
        if isinstance(e, (ImportTooLarge, XlsxTooLarge)):
            form.add_error("import_file", str(e))
        else:
            super().add_data_read_fail_error_to_form(form, e)


class ReadOnlyAdminMixin:
    """For append-only history and derived state: visible, never added, edited or deleted here."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
