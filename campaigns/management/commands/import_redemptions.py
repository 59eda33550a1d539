"""python manage.py import_redemptions PATH [--source import]"""

from django.core.management.base import BaseCommand, CommandError

from campaigns.offers import redemptions_import_csv


class Command(BaseCommand):
    help = ("Record redemptions from a CSV (code, external_id[, order_amount, order_ref, at, category]). "
            "Each code redeems at most once; refused rows are listed on stderr with their line.")

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--source", default="import", help="Stored on each redemption (default: import).")

    def handle(self, *args, path, source, **options):
        try:
            with open(path, "rb") as file:
                result = redemptions_import_csv(file=file, source=source[:16])
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            raise CommandError(str(exc)) from None
        for error in result.errors:
            self.stderr.write(f"line {error['line']}: {error['reason']}: {error['message']}")
        self.stdout.write(result.summary())
