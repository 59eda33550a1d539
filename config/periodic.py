"""Periodic work, declared in code. `manage.py setup_periodic_tasks` turns this list into
django-celery-beat rows (never create them by hand in the admin).

Each entry: name, task path, crontab fields (minute, hour, day_of_week, day_of_month,
month_of_year), and a one-line comment saying when it runs.
"""

PERIODIC_TASKS: list[dict] = []
