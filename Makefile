# Every target installs what it needs itself: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install postgres browser media test lint bench demo certs docker-engine wheelhouse base-image e2e-compose old-codecs gpu-pack clean

install: $(STAMP)

# Re-run only when the dependency list changes, so `make install` is cheap and safe to repeat.
# Debian's python3 makes a venv only with python3-venv (ensurepip): installed where missing.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV) && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[edge,cloud,train,eval,dev]"
	touch $(STAMP)

# The store and replica tests run a real PostgreSQL server and a real nginx (TLS ones, with a
# certificate openssl makes): install them from the
# system's packages where they are missing (CI runs as root; PostgreSQL then runs as nobody).
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || command -v postgres >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null)
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null)
	@command -v openssl >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null)

# The dashboard test drives a real headless Chromium.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# `spic-edge stream` reads video through the ffmpeg program; its tests make a clip with it.
media:
	@command -v ffmpeg >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null)

test: install postgres browser media
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) bench/codec.py
	$(PY) bench/edge_latency.py
	$(PY) bench/rate_ladder.py
	$(PY) bench/cloud_load.py
	$(PY) bench/adversarial.py
	$(PY) bench/frame_queue.py
	$(PY) bench/store.py
	$(PY) bench/replicas.py

# The main job: cloud + edge on the shipped model. IMAGES=folder adds your own photos.
demo: install
	$(PY) scripts/demo.py $(if $(IMAGES),--images $(IMAGES))

# TLS for compose's load balancer: a throwaway CA and a server certificate it signs (for the host
# names lb, localhost and 127.0.0.1) in docker/certs, made once; delete the folder to make new ones.
certs: docker/certs/server.pem

docker/certs/server.pem:
	sh docker/make-certs.sh docker/certs

# A Docker engine: docker.io, compose and mmdebstrap from the system's packages where missing, and
# dockerd started in the background where none answers (its log: /tmp/spic-dockerd.log).
docker-engine:
	@command -v dockerd >/dev/null && command -v mmdebstrap >/dev/null && \
		(command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1) || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			docker.io docker-compose mmdebstrap >/dev/null)
	@docker info >/dev/null 2>&1 || { nohup dockerd >/tmp/spic-dockerd.log 2>&1 & \
		for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done; docker info >/dev/null; }

# The wheels the images install from, so `docker build` needs no network. Stale setuptools output
# under build/ would leak into the spic wheel: it goes first.
wheelhouse: install
	rm -rf build/lib build/bdist.*
	$(PY) -m pip wheel -q -w build/wheelhouse ".[cloud,edge]"

# Base images from Debian's packages, for machines with no container registry.
base-image: docker-engine
	bash docker/base-image.sh

# The failure scenario through a real Docker engine; its last line is JSON. Not in `make test`.
e2e-compose: docker-engine wheelhouse
	$(PY) scripts/e2e_compose.py

# The bundles that left the tree (models/bundles/retired.json: codecs older than the last three,
# and the reference classifiers), written out of git history; nothing is downloaded. The default
# DEST puts them back where the training configs name them; SPIC_CLOUD_MODEL_DIR=DEST serves them.
DEST ?= models/bundles
old-codecs:
	$(PYTHON) scripts/old_codecs.py --dest $(DEST)

# A training copy of DATA (WebP, small enough to travel with the tree to a lent GPU) and the
# teacher it needs, in .gpu-pack/data.zip; it prints the command that trains from it.
DATA ?= ../shared/data/imagenette
gpu-pack: install
	$(PY) scripts/gpu_pack.py --data $(DATA) --out .gpu-pack

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info demo_out
