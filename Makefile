# FaceSocial AI developer entry points. `make run` and `make test` are the two
# commands at the top of README.md; both work on a fresh machine.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# Without internet, models come from a mirror directory (../shared/models here).
MIRROR ?= $(firstword $(FACESOCIAL_MODEL_MIRROR) $(wildcard ../shared/models))
SAMPLE ?= $(firstword $(wildcard ../shared/testdata/faces/group_kit_rose.jpg) tests/data/sample.jpg)
XDIST ?= -n 2
# first admin of a fresh database (development defaults; set your own)
ADMIN_USER ?= admin
ADMIN_PASSWORD ?= change-me-please

.PHONY: setup models run demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/.installed

models: setup
	$(BIN)/facesocial models pull $(if $(MIRROR),--from $(MIRROR))

run: models
	FACESOCIAL_ADMIN_USERNAME=$(ADMIN_USER) FACESOCIAL_ADMIN_PASSWORD=$(ADMIN_PASSWORD) \
		$(BIN)/facesocial serve

demo: models
	$(BIN)/facesocial models list
	$(BIN)/facesocial analyze $(SAMPLE) --tasks all

test: setup
	$(BIN)/pytest -q $(XDIST)

bench: setup
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/pip install -q --no-deps face-recognition==1.3.0
	$(BIN)/facesocial bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
