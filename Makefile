# The README's two commands: `make run` and `make test`. Each sets itself up on a fresh clone.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
STAMP := $(VENV)/.requirements-installed

.PHONY: run test venv clean bench

venv: $(STAMP)

# Reinstalls only when requirements.txt changes (the stamp is newer otherwise).
$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

# Migrate, declare the periodic tasks, seed the demo world once, print the admin login, then run
# the web server (HOST:PORT, default 127.0.0.1:8000), one Celery worker and Celery beat in the
# foreground. Ctrl-C stops all three. DATABASE_URL / CELERY_BROKER_URL switch to PostgreSQL and
# Redis or RabbitMQ; the defaults (SQLite file, filesystem broker under var/) need no server.
# Links in messages (unsubscribe, preferences, tracking) point at this server unless SITE_URL is
# set: the worker renders them, so without this they would name port 8000 whatever PORT says.
# A server on every interface (0.0.0.0) or on loopback is reached as localhost, which the
# DEBUG default of ALLOWED_HOSTS accepts; any other HOST must be in ALLOWED_HOSTS.
WEB_HOST = $(if $(filter 127.0.0.1 0.0.0.0 localhost,$(HOST)),localhost,$(HOST))
run: export DEBUG ?= 1
run: export PYTHONUNBUFFERED := 1
run: export WEB_ADDRESS := $(HOST):$(PORT)
run: export SITE_URL := $(or $(SITE_URL),http://$(WEB_HOST):$(PORT))
run: venv
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_periodic_tasks
	$(BIN)/python manage.py seed_demo --if-empty
	$(BIN)/python manage.py ensure_demo_superuser --port $(PORT)
	@echo "Starting web (http://$(WEB_HOST):$(PORT)/admin/), one Celery worker and Celery beat; Ctrl-C stops them all."
	@echo "Links in messages go to $(SITE_URL) (SITE_URL)."
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile.dev

# The whole suite (pytest + pytest-django). PYTEST_ARGS passes options through, e.g. PYTEST_ARGS=-x.
test: export DEBUG ?= 1
test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv
	@echo "Benchmarks are scripts, not tests: see bench/ and the README."

clean:
	rm -rf $(VENV) var db.sqlite3 db.sqlite3-wal db.sqlite3-shm
