import os
from pathlib import Path

from django.apps import AppConfig
from django.conf import settings


class DashboardConfig(AppConfig):
    name = "dashboard"
    verbose_name = "Dashboard"

    def ready(self):
        # matplotlib reads MPLCONFIGDIR once, on first import, and writes its font cache there
        # (default ~/.config/matplotlib, which a web server's user may not be able to write):
        # under VAR_DIR unless the environment says otherwise. Set here, at start-up, so it is
        # in place whichever module imports matplotlib first. MPLBACKEND only matters to pyplot,
        # which this app never uses; set for any code that does.
        os.environ.setdefault("MPLCONFIGDIR", str(Path(settings.VAR_DIR) / "matplotlib"))
        os.environ.setdefault("MPLBACKEND", "svg")
