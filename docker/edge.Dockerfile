# The SPIC camera side: onnxruntime, numpy, Pillow, httpx. No torch, no fastapi.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY edge_client ./edge_client
COPY cloud_service/__init__.py ./cloud_service/__init__.py
COPY models/__init__.py ./models/__init__.py
COPY evaluation/__init__.py ./evaluation/__init__.py
RUN pip install ".[edge]" && python -c "import importlib.util as u, sys; sys.exit(bool(u.find_spec('torch') or u.find_spec('fastapi')))"
COPY models/bundles/spic-imagenette /app/models/bundles/spic-imagenette
RUN useradd --system --uid 10001 spic && mkdir -p /frames /queue && chown spic /frames /queue
USER spic
ENV SPIC_EDGE_BUNDLE=/app/models/bundles/spic-imagenette SPIC_EDGE_QUEUE_DIR=/queue SPIC_CACHE_DIR=/queue/.cache
CMD ["spic-edge", "watch", "/frames"]
