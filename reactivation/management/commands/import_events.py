"""python manage.py import_events PATH [--encoding auto] [--timezone ZONE] [--dry-run] [--errors-out FILE]"""

import os

from django.core.management.base import BaseCommand

from reactivation.imports import cli
from reactivation.imports.customers import ImportOptions
from reactivation.imports.events import events_import
from reactivation.imports.reading import UnusableFile


class Command(BaseCommand):
    help = "Import activity events (external_id, kind, occurred_at, amount, category, item). See docs/import.md."

    def add_arguments(self, parser):
        cli.add_common_arguments(parser)

    def handle(self, *args, path, encoding, timezone, dry_run, errors_out, **options):
        errors_path = errors_out or cli.default_errors_path(path)
        import_options = ImportOptions(encoding=encoding, time_zone=timezone, dry_run=dry_run,
                                       file_label=os.path.basename(path))
        try:
            with cli.errors_file(errors_path) as stream, cli.progress_bar(self.stdout, "events") as bar:
                result = events_import(path=path, errors_out=stream, options=import_options,
                                       on_progress=cli.make_progress_callback(bar))
        except UnusableFile as exc:
            raise cli.unusable(exc) from None
        if result.invalid or result.unknown_customer:
            self.stderr.write(f"{result.invalid + result.unknown_customer} rows were not imported; see {errors_path}")
        self.stdout.write(result.summary)
