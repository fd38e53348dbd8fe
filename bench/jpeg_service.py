"""The JPEG baseline service for bench/cloud_load.py: upload a JPEG, decode it, and classify the
pixels with the same bundle's encoder and latent classifier, batched the same way as SPIC.

    SPIC_CLOUD_BUNDLES=... uvicorn --factory bench.jpeg_service:create_app
"""

from __future__ import annotations

import io

import numpy as np
from fastapi import FastAPI, Request, Response
from PIL import Image

from cloud_service.batcher import Batcher, Overloaded
from cloud_service.metrics import Metrics
from cloud_service.settings import get_settings
from shared.preprocess import prepare
from shared.runtime import SpicCodec


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI()

    @app.on_event("startup")
    async def load() -> None:
        runtime = SpicCodec(settings.bundles[0], settings.inference_threads, arena=False)
        runtime.load_heads()
        encoder = runtime.session("encoder")

        def run(x: np.ndarray) -> list[np.ndarray]:
            y = encoder.run(None, {"image": x})[0]
            return list(runtime.classify_latents(y))  # one row per image

        app.state.runtime = runtime
        app.state.batcher = Batcher(
            run,
            settings.max_batch_size,
            settings.max_batch_delay_ms / 1000,
            settings.queue_size,
            Metrics(),
            max_wait_s=settings.max_queue_wait_ms / 1000,
        )

    @app.post("/v1/classify-jpeg")
    async def classify(request: Request) -> Response:
        body = await request.body()
        runtime = app.state.runtime
        busy = Response(status_code=503, headers={"Retry-After": str(settings.retry_after_s)})
        try:  # the same shedding as the SPIC service: a full queue or a long wait gets 503
            app.state.batcher.check_room()
            im = Image.open(io.BytesIO(body)).convert("RGB")
            spec = runtime.manifest.preprocessing.model_dump()
            x = prepare(im, spec, runtime.manifest.latent.stride)
            probs = await app.state.batcher.submit(x)
        except Overloaded:
            return busy
        i = int(np.argmax(probs))
        return Response(
            f'{{"label": "{runtime.labels[i]}", "confidence": {float(probs[i])}}}',
            media_type="application/json",
        )

    return app
