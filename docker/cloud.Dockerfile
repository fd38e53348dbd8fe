# The SPIC cloud service: FastAPI + uvicorn + onnxruntime, with the default bundle baked in.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY cloud_service ./cloud_service
COPY edge_client ./edge_client
COPY models/__init__.py ./models/__init__.py
COPY evaluation/__init__.py ./evaluation/__init__.py
RUN pip install ".[cloud]"
COPY models/bundles/spic-imagenette /app/models/bundles/spic-imagenette
RUN useradd --system --uid 10001 spic && mkdir -p /data && chown spic /data
USER spic
ENV SPIC_CLOUD_BUNDLES=/app/models/bundles/spic-imagenette \
    SPIC_CLOUD_IDEMPOTENCY_DB=/data/idempotency.sqlite \
    SPIC_CLOUD_DATA_DIR=/data
EXPOSE 8000
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=5 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status != 200)"]
CMD ["spic-cloud", "serve", "--host", "0.0.0.0", "--port", "8000"]
