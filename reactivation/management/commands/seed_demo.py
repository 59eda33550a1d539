"""`manage.py seed_demo`: the demo world for `make run` (see reactivation.demo)."""

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from reactivation.demo import demo_world_seed, lifecycle_mix
from reactivation.models import Customer


class Command(BaseCommand):
    help = "Create a realistic demo world (customers, activity, rules, segments, consent). Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--customers", type=int, default=3000, help="How many demo customers (default 3000).")
        parser.add_argument("--seed", type=int, default=2024, help="Random seed: the same seed gives the same world.")
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing when any customer exists (what `make run` uses)."
        )

    def handle(self, *args, customers, seed, if_empty, **options):
        if customers < 0:
            raise CommandError("--customers must be zero or more.")
        if if_empty and Customer.objects.exists():
            self.stdout.write("Customers exist already; not seeding (drop --if-empty to add the demo world).")
            summary = {"skipped": 1, **lifecycle_mix()}
        else:
            summary = demo_world_seed(customers=customers, seed=seed, now=timezone.now())
        self.stdout.write(" ".join(f"{key}={value}" for key, value in summary.items()))
