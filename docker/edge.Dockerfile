# The SPIC camera side: onnxruntime, numpy, Pillow, httpx; no torch and no fastapi (checked).
# Installs from build/wheelhouse (`make wheelhouse`); BASE_IMAGE as in cloud.Dockerfile.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY build/wheelhouse /wheels
RUN python3 -m venv /opt/spic \
 && /opt/spic/bin/pip install --no-cache-dir --no-index --find-links /wheels "spic[edge]" \
 && /opt/spic/bin/python -c "import importlib.util as u, sys; sys.exit(bool(u.find_spec('torch') or u.find_spec('fastapi')))"

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/spic/bin:$PATH
COPY --from=build /opt/spic /opt/spic
RUN useradd --system --uid 10001 spic && mkdir -p /frames /queue && chown spic /frames /queue
USER spic
ENV SPIC_EDGE_QUEUE_DIR=/queue SPIC_CACHE_DIR=/queue/.cache
CMD ["spic-edge", "watch", "/frames"]
