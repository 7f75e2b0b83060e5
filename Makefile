# ct-platform: `make demo` to run it, `make test` to test it.
SHELL := /bin/bash
CT_HOME ?= $(CURDIR)/.ct
DAGSTER_HOME ?= $(CT_HOME)/dagster
export CT_HOME DAGSTER_HOME
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
PYTEST_ARGS ?=

.PHONY: install instance demo test lint format validate benchmark clean images up down land

# The production stack (deploy/compose.yaml) on the local Docker engine; deploy/README.md.
COMPOSE := $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# CT_STACK names the project, its network and volumes, and labels its run containers.
export CT_STACK ?= ct-platform
COMPOSE_ARGS := -p $(CT_STACK) -f deploy/compose.yaml $(foreach p,$(PROFILES),--profile $(p))
# Under vfs creating a container copies its image's tree: longer than docker-compose's 60 s.
export COMPOSE_HTTP_TIMEOUT ?= 600

$(UV):
	python3 -m pip install --user --quiet uv

# Bytecode compiled once at install: uv does not compile by default and PYTHONDONTWRITEBYTECODE
# (set on this box) stops Python caching it, so every process would compile every module it
# imports from source (26 of 71 s of one `training_job`, benchmarks/training/README.md).
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode
	touch $@

# The Dagster instance the CLI (and `make test`'s validate step) uses; tests make their own.
# A dagster.yaml already in DAGSTER_HOME is the user's and is never overwritten.
instance:
	@bash deploy/dagster_home.sh

install: $(VENV)/.installed instance

demo: install
	bash deploy/demo.sh

test: install
	$(UV) run --frozen ruff check ct_platform ct_platform_tests benchmarks
	$(UV) run --frozen dagster definitions validate -m ct_platform.definitions
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install
	$(UV) run --frozen ruff check ct_platform ct_platform_tests benchmarks
	$(UV) run --frozen ruff format --check ct_platform ct_platform_tests benchmarks

format: install
	$(UV) run --frozen ruff format ct_platform ct_platform_tests benchmarks
	$(UV) run --frozen ruff check --fix ct_platform ct_platform_tests benchmarks

benchmark: install
	$(UV) run --frozen python benchmarks/training/compare.py
	$(UV) run --frozen python benchmarks/serving/run.py
	$(UV) run --frozen python benchmarks/drift/bench_drift.py
	$(UV) run --frozen python benchmarks/delivery/run.py

images:
	bash deploy/start-dockerd.sh
	bash deploy/docker/build-images.sh

# Builds the images only when one is missing (a build is 30-45 min under vfs here): after a
# code change, `make images` first.
STACK_IMAGES := ct-platform-app:latest ct-platform-postgres:15 ct-platform-prometheus:latest
up:
	bash deploy/start-dockerd.sh
	docker image inspect $(STACK_IMAGES) >/dev/null 2>&1 || $(MAKE) images
	$(COMPOSE) $(COMPOSE_ARGS) up -d
	@echo "Dagster http://127.0.0.1:$${DAGSTER_PORT:-3000}  MLflow http://127.0.0.1:$${MLFLOW_PORT:-5000}" \
	  " model http://127.0.0.1:$${CT_SERVING_PORT:-8080}  Prometheus http://127.0.0.1:$${PROMETHEUS_PORT:-9090}"

# Volumes (stores, CT_HOME, landed batches) are kept; `make down VOLUMES=1` drops them too.
# The runs' containers (DockerRunLauncher's, outside compose's project) go by label, once the
# daemon (which launches them) is stopped, and again after `down`: one the engine was still
# creating shows up late and would keep the network (and volumes) in use.
RUN_CONTAINERS = docker ps -aq --filter label=ct-platform/stack=$(CT_STACK)
down:
	$(COMPOSE) $(COMPOSE_ARGS) stop dagster-daemon
	$(RUN_CONTAINERS) | xargs -r docker rm -f
	$(COMPOSE) $(COMPOSE_ARGS) down --remove-orphans $(if $(VOLUMES),--volumes)
	@if [ -n "$$($(RUN_CONTAINERS))" ]; then $(RUN_CONTAINERS) | xargs -r docker rm -f \
	  && $(COMPOSE) $(COMPOSE_ARGS) down --remove-orphans $(if $(VOLUMES),--volumes); fi

# Land one batch file in the stack: `make land FILE=path/to/batch.csv`.
land:
	docker cp "$(FILE)" "$$($(COMPOSE) $(COMPOSE_ARGS) ps -q code-server):/app/data/incoming/"

clean:
	rm -rf $(CT_HOME)
