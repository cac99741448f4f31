# The two commands of the README: `make run` (the whole pipeline locally) and `make test`.
# Each sets up what it needs on a fresh machine.

PYTHON_BOOTSTRAP ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-unit lint venv services kafka-start kafka-stop stop demo bench chaos clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-confluent.txt
	$(PYTHON_BOOTSTRAP) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# RUN_PORT / RUN_HOST (default 127.0.0.1:8000) choose where the API listens; KAFKA_BOOTSTRAP_SERVERS
# which broker it uses (started here when none answers there).
run: venv
	$(PY) scripts/run_local.py

# `make restart-worker` (server, worker, relay, beat, consumer): restart one component of a
# running `make run`.
restart-%:
	$(PY) scripts/run_local.py --restart $*

test: venv
	scripts/test-all

test-unit: venv
	$(PY) -m pytest -m "not integration and not fault"

# ruff (lint, then the format check) and mypy, as configured in pyproject.toml. All three run;
# the target fails when any of them found something. `make test` runs it first.
lint: venv
	@status=0; \
	echo "== ruff check"; $(VENV)/bin/ruff check . || status=1; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check . || status=1; \
	echo "== mypy"; $(VENV)/bin/mypy || status=1; \
	exit $$status

services:
	scripts/services-up

kafka-start:
	scripts/kafka-local start

kafka-stop:
	scripts/kafka-local stop

demo: venv
	$(PY) scripts/run_local.py --demo $(or $(ACTIONS),1000)

# The fault campaign at scale (>= 50,000 user actions, >= 20 faults) on PostgreSQL + Redis + Kafka.
# The campaign starts and stops a Kafka of its own (tests/support/kafka.py campaign_kafka): a
# private single broker (127.0.0.1:19192) by default; KAFKA_BROKERS=3 a 3-node cluster
# (KAFKA_CLUSTER_BOOTSTRAP_SERVERS, default 127.0.0.1:9700,9702,9704, files in
# var/kafka-chaos-cluster) and adds the broker_kill fault. Its Celery queue: CHAOS_CELERY_BROKER_URL
# (default Redis db 6, apart from the dev queue it purges).
chaos: venv
	scripts/services-up && \
	  KAFKA_BROKERS=$(or $(KAFKA_BROKERS),1) \
	  CELERY_BROKER_URL=$${CHAOS_CELERY_BROKER_URL:-redis://127.0.0.1:6379/6} $(PY) -m tests.fault.campaign \
	  --actions $(or $(ACTIONS),50000) --faults $(or $(FAULTS),20) $(if $(SEED),--seed $(SEED),)

# Every benchmark; regenerates docs/BENCHMARKS.md and its plot.
# The peer of bench/peers.py (django-reliable-outbox) needs Python >= 3.12: a venv of its own,
# from pyenv's 3.12 when there is one (PEER_PYTHON= to choose another).
PEER_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) python3.12)
var/peer-venv/.installed: requirements-peer.txt
	$(PEER_PYTHON) -m venv var/peer-venv
	var/peer-venv/bin/pip install -q -r requirements-peer.txt
	touch $@

bench: venv var/peer-venv/.installed
	$(PY) -m pip install -q -r requirements-bench.txt
	scripts/services-up && scripts/kafka-local start && \
	  $(PY) bench/report.py $(if $(QUICK),--quick,)

stop:
	$(PY) scripts/run_local.py --stop

clean: stop
	rm -rf var
