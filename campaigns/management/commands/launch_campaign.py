"""Run a campaign now: ``manage.py launch_campaign NAME_OR_ID [--sync]``.

Without --sync the run goes through the Celery queues and the command waits for it to settle
(nothing pending, claimed or sending; deliveries deferred to quiet hours are left to beat). With --sync
everything happens in this process. Ends with one summary line:
``targeted=N sent=N skipped_consent=N skipped_suppressed=N skipped_cap=N skipped_reentry=N deferred_quiet=N failed=N
unknown=N``.
"""

import time

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from campaigns.models import Campaign, CampaignRun, Delivery
from campaigns.services import campaign_launch, run_refresh_counters, summary_line


class Command(BaseCommand):
    help = "Launch a campaign now (through the Celery queues, or in this process with --sync)."

    def add_arguments(self, parser):
        parser.add_argument("campaign", help="The campaign's name or id.")
        parser.add_argument("--sync", action="store_true", help="Materialize and send in this process.")
        parser.add_argument("--timeout", type=float, default=3600, help="Seconds to wait for the workers (default 3600).")

    def handle(self, *args, campaign, sync, timeout, **options):
        found = Campaign.objects.filter(name=campaign).first()
        if found is None and campaign.isascii() and campaign.isdigit() and len(campaign) <= 18:
            found = Campaign.objects.filter(pk=int(campaign)).first()
        if found is None:
            raise CommandError(f"No campaign named or numbered {campaign!r}.")
        try:
            run = campaign_launch(campaign=found, trigger="command", sync=sync)
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if not sync:
            run = self._wait(run, timeout)
        run = run_refresh_counters(run=CampaignRun.objects.select_related("campaign").get(pk=run.pk))
        self.stdout.write(summary_line(run))

    def _wait(self, run, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if run.status not in (CampaignRun.Status.MATERIALIZING, CampaignRun.Status.SENDING):
                return run
            if run.status == CampaignRun.Status.SENDING and not Delivery.objects.filter(
                run=run, status__in=(Delivery.Status.PENDING, Delivery.Status.CLAIMED, Delivery.Status.SENDING)
            ).exists():
                return run
            time.sleep(0.5)
        self.stderr.write(f"Still sending after {timeout:g}s; the workers carry on (run #{run.number}).")
        return run
