# The few commands people use. Every target sets up .venv first (scripts/setup.sh is idempotent).
PY := .venv/bin/python
export SPARK_LOCAL_IP ?= 127.0.0.1

.PHONY: setup demo demo-engine test test-fast lint format bench lock clean airflow-up airflow-down airflow-demo test-e2e bench-freshness bench-smoke

setup:            ## create/refresh .venv from requirements.lock (checks Python 3.11+ and Java 17+)
	@bash scripts/setup.sh

demo: setup       ## the main job: Airflow standalone + bootstrap + partitions through the gate; summary; stays up
	@scripts/airflow-demo $(ARGS)

demo-engine: setup  ## the engine alone, one process, no Airflow: bootstrap + streaming updates, RMSE as it goes
	$(PY) -m streamrec.spark.demo $(ARGS)

# Two pytest workers by default (pytest-xdist), one test file each at a time: the real-Airflow tests spend much
# of their time waiting on the scheduler, and a file's module-scoped scenario must run once. The longest files
# start first (tests/conftest.py). PYTEST_WORKERS=0
# runs everything in one process.
PYTEST_WORKERS ?= 2

test: setup       ## the whole suite (CI runs this); installs Debian's chromium for the browser test when root
	@bash scripts/install-chromium
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

test-fast: setup  ## pure-function tests only (seconds)
	$(PY) -m pytest -m unit $(PYTEST_ARGS)

lint: setup       ## ruff, and the layers' import contracts (pyproject [tool.importlinter])
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	.venv/bin/lint-imports

format: setup
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

bench: setup      ## accuracy and streaming benchmarks (MovieLens when ../shared/data is there, else generated)
	$(PY) bench/accuracy.py
	$(PY) bench/stream.py

airflow-up: setup     ## start Airflow standalone and the Spark Connect server in the background (prints UI URL and where the password is)
	@scripts/airflow-up

airflow-down:         ## stop exactly what airflow-up started (its recorded process group)
	@scripts/airflow-down

airflow-demo: demo   ## (the same as make demo)

test-e2e: setup       ## real Airflow (dag.test) + Spark: bootstrap and three partitions
	$(PY) -m pytest tests/test_pipeline_e2e.py $(PYTEST_ARGS)

bench-freshness: setup  ## drop-to-publish latency on the running stack (after airflow-demo); ARGS="--repeat 5"
	bash -c 'source scripts/airflow-env && $(PY) bench/freshness.py $(ARGS)'

bench-smoke: setup    ## every bench/ script once on tiny data (tests/test_bench.py; freshness: test_scheduler_restart.py)
	$(PY) -m pytest tests/test_bench.py --durations=0 $(PYTEST_ARGS)

lock:             ## recompile requirements.lock from requirements.in
	.venv/bin/uv pip compile requirements.in -o requirements.lock --python-version 3.11 --no-header -q

clean:
	rm -rf var .pytest_cache .ruff_cache

# --- docker-compose cluster (docs/CLUSTER.md) ---------------------------------------------------------------
.PHONY: compose-check compose-env

compose-check:        ## validate docker-compose.yaml with docker-compose 1.29 or Compose v2, if installed (else skip)
	@if command -v docker-compose >/dev/null 2>&1; then \
	  docker-compose --env-file .env.example -f docker-compose.yaml config -q \
	    && echo "compose-check: docker-compose.yaml is valid for docker-compose $$(docker-compose version --short)"; \
	elif docker compose version >/dev/null 2>&1; then \
	  docker compose --env-file .env.example -f docker-compose.yaml config -q \
	    && echo "compose-check: docker-compose.yaml is valid for Docker Compose $$(docker compose version --short)"; \
	else \
	  echo "compose-check: skipped: neither docker-compose nor 'docker compose' is installed (tests/test_compose.py still checks the file)"; \
	fi

compose-env:          ## write .env for docker-compose with generated secrets (keeps an existing .env)
	@python3 scripts/compose-env

# --- dependency audit (docs/SECURITY.md) -----------------------------------------------------------------------
.PHONY: audit
AUDIT_VENV := var/audit-venv

audit: setup          ## pip-audit of requirements.lock (throwaway venv in var/; needs PyPI's JSON API or OSV)
	@test -x $(AUDIT_VENV)/bin/pip-audit || { .venv/bin/uv venv -q $(AUDIT_VENV) --python 3.11 && \
	  .venv/bin/uv pip install -q --python $(AUDIT_VENV)/bin/python pip-audit==2.10.1; }
	$(AUDIT_VENV)/bin/pip-audit -r requirements.lock --no-deps --disable-pip --strict $(AUDIT_ARGS)

# --- the cluster topology as native processes (docs/CLUSTER.md) ----------------------------------------------
.PHONY: cluster-up cluster-down cluster-demo cluster-status

cluster-up: setup     ## docker-compose.yaml's services as processes on 127.0.0.1 (var/cluster/); waits for health
	@scripts/cluster-up

cluster-down:         ## stop exactly what cluster-up started; keeps the data (ARGS=--purge deletes it)
	@scripts/cluster-down $(ARGS)

cluster-demo: setup   ## make demo's scenario on the cluster: Spark standalone, Postgres, S3 (moto); stays up
	@scripts/cluster-demo $(ARGS)

cluster-status:       ## each cluster service: healthy / unhealthy / restarting / stopped
	@.venv/bin/python scripts/cluster_launcher.py status
