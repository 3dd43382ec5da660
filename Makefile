# fraudwatch — the one entry point. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

include build/versions.env
export

ROOT       := $(abspath .)
VENV       := $(ROOT)/.venv
PY         := $(VENV)/bin/python
LOCAL      := $(ROOT)/.local
JAVA_HOME  ?= $(shell dirname $$(dirname $$(readlink -f $$(command -v java))))
export JAVA_HOME
export PYSPARK_PYTHON        := $(PY)
export PYSPARK_DRIVER_PYTHON := $(PY)
export SPARK_LOCAL_IP        := 127.0.0.1
export UV_PYTHON_DOWNLOADS   := never
export FRAUDWATCH_LOCAL_DIR  ?= $(LOCAL)

RATE     ?= 5000
DURATION ?= 60
DAYS     ?= 60
STOP     ?= 0
SPEEDUP  ?=

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## create .venv with every workspace member (locked) and resolve the Kafka and Spark jars
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	uv sync --frozen
	@mkdir -p $(LOCAL)/jars
	@if [ ! -f $(LOCAL)/jars/kafka/.done-$(KAFKA_VERSION) ]; then \
	  rm -rf $(LOCAL)/jars/kafka && \
	  FRAUDWATCH_KAFKA_VERSION=$(KAFKA_VERSION) mvn -q -B -f build/maven/kafka/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(LOCAL)/jars/kafka -DincludeScope=runtime && touch $(LOCAL)/jars/kafka/.done-$(KAFKA_VERSION); fi
	@if [ ! -f $(LOCAL)/jars/spark/.done-$(SPARK_VERSION) ]; then \
	  rm -rf $(LOCAL)/jars/spark && \
	  FRAUDWATCH_SPARK_VERSION=$(SPARK_VERSION) mvn -q -B -f build/maven/spark/pom.xml dependency:copy-dependencies \
	    -DoutputDirectory=$(LOCAL)/jars/spark -DincludeScope=runtime && touch $(LOCAL)/jars/spark/.done-$(SPARK_VERSION); fi
	@echo "setup done: .venv and $(LOCAL)/jars"

.PHONY: lock
lock: ## re-resolve uv.lock after changing a pyproject
	uv lock

.PHONY: lint
lint: ## ruff (lint + format check) and mypy on the library
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: fmt
fmt: ## format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

.PHONY: schemas
schemas: ## regenerate docs/schemas/ from the pydantic event models
	$(PY) -m fraudwatch.events docs/schemas

.PHONY: config-docs
config-docs: ## regenerate docs/configuration.md from the Settings class
	$(PY) -m fraudwatch.config > docs/configuration.md

.PHONY: up
up: ## start Kafka, MLflow, Redis and Prometheus (where installed); waits until healthy
	$(PY) scripts/services.py up

.PHONY: down
down: ## stop the API, stream and review queue the demo started, then every local service that `make up` started
	$(PY) scripts/demo.py --stop-apps
	$(PY) scripts/services.py down

.PHONY: status
status: ## show the local services
	$(PY) scripts/services.py status

.PHONY: data
data: ## write simulated history (DAYS=) with labels to .local/data
	$(PY) -m fraudwatch.simulator --days $(DAYS) --out $(LOCAL)/data

.PHONY: train
train: ## build training data, train, evaluate, log, register, promote (DATA=path PRESET=handbook|MAPPING=file LABEL_DELAY= TRAIN_ARGS= optional)
	$(PY) -m fraudwatch_training train $(if $(DATA),--data $(DATA)) $(if $(PRESET),--preset $(PRESET)) $(if $(MAPPING),--mapping $(MAPPING)) $(if $(LABEL_DELAY),--label-delay $(LABEL_DELAY)) $(TRAIN_ARGS)

.PHONY: compare-models
compare-models: ## production vs the challenger's shadow scores on the labelled live traffic (labels topic + review queue; JSON= to also write JSON)
	$(PY) -m fraudwatch_training compare-models $(if $(JSON),--json $(JSON))

.PHONY: bootstrap
bootstrap: ## warm start: the states the history (make data) ends with -> $(LOCAL)/bootstrap/states.parquet and the online store
	$(PY) -m fraudwatch.bootstrap write --data $(if $(DATA),$(DATA),$(LOCAL)/data)
	$(PY) -m fraudwatch.bootstrap load-store

.PHONY: serve
serve: ## run the scorer API on :8000
	$(PY) -m fraudwatch_api

.PHONY: review
review: ## run the analyst review queue on :8010 (fraud.alerts in, labels out; docs/review.md)
	$(PY) -m fraudwatch_review

.PHONY: stream
stream: ## run the Spark streaming scorer (warm-started from `make bootstrap`'s snapshot on a fresh checkpoint)
	$(if $(wildcard $(LOCAL)/bootstrap/states.parquet),FRAUDWATCH_STREAM_WARM_START=$(LOCAL)/bootstrap/states.parquet )$(PY) -m fraudwatch_stream

.PHONY: produce
produce: ## stream live simulated transactions continuing `make data` (RATE= events/s or SPEEDUP= simulated s per s, DURATION= s)
	$(VENV)/bin/fraudwatch-produce $(if $(SPEEDUP),--speedup $(SPEEDUP),--rate $(RATE)) --duration $(DURATION)

.PHONY: demo
demo: ## the whole pipeline end to end, then a summary of this run (DURATION=60, SPEEDUP= or RATE=, STOP=1 to stop services after)
	$(MAKE) setup
	$(PY) scripts/demo.py --duration $(DURATION) $(if $(SPEEDUP),--speedup $(SPEEDUP)) $(if $(filter command line,$(origin RATE)),--rate $(RATE)) $(if $(filter 1,$(STOP)),--stop)

.PHONY: test-unit
test-unit: ## fast tests, no services
	$(VENV)/bin/pytest tests/unit -q

.PHONY: test
test: ## the whole suite (what CI runs): unit, integration (real services), e2e
	$(VENV)/bin/pytest tests -q

.PHONY: bench
bench: bench-simulator bench-producer bench-quality bench-api bench-stream ## every benchmark

.PHONY: bench-simulator
bench-simulator: ## simulator throughput (1M transactions)
	$(PY) bench/bench_simulator.py

.PHONY: bench-producer
bench-producer: ## producer throughput measured by an independent consumer
	$(PY) bench/bench_producer.py

.PHONY: bench-quality
bench-quality: ## detection quality, Handbook prequential protocol (DATA=.../transactions_raw.parquet; any history: MAPPING=file OUT=results.json)
	$(PY) bench/bench_quality.py $(if $(DATA),--data $(DATA)) $(if $(MAPPING),--mapping $(MAPPING)) $(if $(LABEL_DELAY),--label-delay $(LABEL_DELAY)) $(if $(OUT),--out $(OUT))

.PHONY: bench-api
bench-api: ## our /score vs `mlflow models serve` on the same model
	$(PY) bench/bench_api.py

.PHONY: bench-stream-floor
bench-stream-floor: ## framework floor: the stream's query shape with trivial bodies (records/s, CPU per process)
	$(PY) bench/bench_stream_floor.py

.PHONY: bench-stream
bench-stream: ## stream throughput and latency at rising input rates
	$(PY) bench/bench_stream.py

.PHONY: clean
clean: ## remove runtime state under .local (keeps jars)
	find $(LOCAL) -mindepth 1 -maxdepth 1 ! -name jars -exec rm -rf {} +
