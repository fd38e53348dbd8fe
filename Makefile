# Every target installs what it needs itself: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install postgres browser test lint bench demo e2e-compose clean

install: $(STAMP)

# Re-run only when the dependency list changes, so `make install` is cheap and safe to repeat.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[edge,cloud,train,eval,dev]"
	touch $(STAMP)

# The results-store tests run a real PostgreSQL server: install one from the system's packages
# where none is found (CI runs as root; PostgreSQL itself then runs as nobody).
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)

# The dashboard test drives a real headless Chromium.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: install postgres browser
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/codec.py
	$(PY) bench/edge_latency.py
	$(PY) bench/cloud_load.py
	$(PY) bench/adversarial.py
	$(PY) bench/frame_queue.py
	$(PY) bench/store.py

# The main job: cloud + edge on the shipped model. IMAGES=folder adds your own photos.
demo: install
	$(PY) scripts/demo.py $(if $(IMAGES),--images $(IMAGES))

# The end-to-end scenario through a real Docker engine (not available on the CI machine).
e2e-compose:
	SPIC_API_KEY=$${SPIC_API_KEY:-e2e-key} docker compose up --build -d
	$(PY) scripts/e2e_compose.py
	docker compose down -v

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info demo_out
