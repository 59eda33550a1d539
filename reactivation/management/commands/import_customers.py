"""python manage.py import_customers PATH [--encoding auto] [--region CN] [--timezone ZONE]
[--notice-version V] [--dry-run] [--errors-out FILE]"""

import os

from django.core.management.base import BaseCommand

from reactivation.imports import cli
from reactivation.imports.customers import ImportOptions, customers_import
from reactivation.imports.reading import UnusableFile


class Command(BaseCommand):
    help = "Import customers from a CSV or XLSX file (upsert by external_id). See docs/import.md."

    def add_arguments(self, parser):
        cli.add_common_arguments(parser)
        parser.add_argument("--region", default="", help="Phone region for numbers without +country (default DEFAULT_REGION).")
        parser.add_argument("--notice-version", default="", help="Privacy notice version; required with consent columns.")

    def handle(self, *args, path, encoding, region, timezone, notice_version, dry_run, errors_out, **options):
        errors_path = errors_out or cli.default_errors_path(path)
        import_options = ImportOptions(
            encoding=encoding, region=region, time_zone=timezone, notice_version=notice_version,
            dry_run=dry_run, file_label=os.path.basename(path),
        )
        try:
            with cli.errors_file(errors_path) as stream, cli.progress_bar(self.stdout, "customers") as bar:
                result = customers_import(
                    path=path, errors_out=stream, options=import_options,
                    on_progress=cli.make_progress_callback(bar),
                )
        except UnusableFile as exc:
            raise cli.unusable(exc) from None
        if result.invalid:
            self.stderr.write(f"{result.invalid} rows were not imported; see {errors_path}")
        if result.consent_refused:
            self.stderr.write(
                f"{result.consent_refused} consent grants were not applied: the customers had withdrawn "
                f"themselves; see {errors_path}"
            )
        self.stdout.write(result.summary)
