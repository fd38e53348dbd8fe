# The SPIC cloud service: FastAPI + uvicorn + onnxruntime, with the default bundles (in the wheel).
# Installs from build/wheelhouse (`make wheelhouse`), so the build needs no network. BASE_IMAGE is
# any Debian-like image with Python 3.11 and venv: python:3.11-slim where a registry is reachable,
# spic-base:bookworm (`make base-image`) where none is.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
COPY build/wheelhouse /wheels
RUN python3 -m venv /opt/spic \
 && /opt/spic/bin/pip install --no-cache-dir --no-index --find-links /wheels "spic[cloud]"

FROM ${BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/spic/bin:$PATH
COPY --from=build /opt/spic /opt/spic
RUN useradd --system --uid 10001 spic && mkdir -p /data && chown spic /data
USER spic
WORKDIR /data
ENV SPIC_CLOUD_IDEMPOTENCY_DB=/data/idempotency.sqlite SPIC_CLOUD_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 \
  CMD ["python3", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["spic-cloud", "serve", "--host", "0.0.0.0", "--port", "8000"]
