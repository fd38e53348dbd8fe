"""CloudClient: posts frames to the cloud's ``/v1/classify`` and returns its prediction.

* Every request carries an ``Idempotency-Key``, so a retry never double-counts a frame.
* Connection errors, timeouts, 429 and 5xx are retried with full-jitter exponential backoff,
  sleep = uniform(0, min(cap, base·2^attempt)); a ``Retry-After`` from the server wins when given.
* 409 ``request-in-flight`` (this frame's first attempt is still being answered, e.g. after a
  timeout) is retried too, after its Retry-After: the cloud will answer the key once it is done.
* Other 4xx answers are final: ``CloudRejectedError`` (``AuthError`` for 401/403) carrying the
  server's problem+json.
* It accepts any ``httpx.Client``, so tests can hand it Starlette's ``TestClient``.
"""

from __future__ import annotations

import email.utils
import hashlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from edge_client.errors import AuthError, CloudRejectedError, CloudUnavailableError

log = logging.getLogger("spic.edge.client")
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
IN_FLIGHT_TYPE = "urn:spic:problem:request-in-flight"
REFINE_HEADER = "SPIC-Refine-Requests"  # the cloud's requests for better pictures, as JSON


def retryable(status: int, problem: dict[str, Any]) -> bool:
    return status in RETRYABLE or (status == 409 and problem.get("type") == IN_FLIGHT_TYPE)


def frame_key(device_id: str, source: str, frame: bytes) -> str:
    """The Idempotency-Key of a frame: derived from what is sent (the frame's bytes), which camera
    sent it and from which file, so re-encoding the same file after a crash gives the same key, the
    same photo sent at another QF or codec is another frame, and two cameras of one fleet (one API
    key) that write the same file name and bytes (a dark night, a test pattern) are two frames."""
    material = device_id.encode() + b"\0" + source.encode() + b"\0" + frame
    return hashlib.sha256(material).hexdigest()[:32]


def rfc3339(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class CloudClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        client: httpx.Client | None = None,
        timeout: float = 10.0,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        device_id: str | None = None,
        ca_cert: str | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # ca_cert: the CA bundle (or the pinned self-signed certificate) an https:// cloud's
        # certificate must chain to; None trusts the system's CAs.
        verify = ssl.create_default_context(cafile=ca_cert) if ca_cert else True
        self.verify = verify  # for other connections to the same cloud (the refine long-poll)
        self.http = client or httpx.Client(timeout=timeout, verify=verify)
        self.timeout = timeout
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if device_id:  # who sent the frame, recorded by the cloud's results store
            self.headers["X-Device-Id"] = device_id
        self.max_retries, self.backoff_base, self.backoff_cap = (
            max_retries,
            backoff_base,
            backoff_cap,
        )
        self.sleep, self.rng = sleep, rng or random.Random()
        # Told the cloud's refinement requests piggybacked on a classify answer (the header's
        # JSON text); see edge_client.refine.
        self.on_refine: Callable[[str], None] | None = None

    def close(self) -> None:
        self.http.close()

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.backoff_cap)
        return self.rng.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))

    def classify(
        self, frame: bytes, idempotency_key: str, captured_at: float | None = None
    ) -> dict[str, Any]:
        """Post one frame; returns the cloud's JSON prediction. Raises an ``UploadError``.

        ``captured_at`` (seconds since the epoch) travels as ``X-Captured-At`` (RFC 3339)."""
        extra = {} if captured_at is None else {"X-Captured-At": rfc3339(captured_at)}
        resp = self._post("/v1/classify", frame, idempotency_key, extra)
        answer: dict[str, Any] = resp.json()
        asked = resp.headers.get(REFINE_HEADER)
        if asked and self.on_refine is not None:
            self.on_refine(asked)
        return answer

    def models(self) -> list[dict[str, Any]]:
        """``GET /v1/models``, one attempt: the bundles the cloud serves, with their ``limits``."""
        try:
            resp = self.http.get(self.base_url + "/v1/models", headers=self.headers)
        except httpx.TransportError as exc:
            raise CloudUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 300:
            raise CloudRejectedError(resp.status_code, _problem(resp), _why(resp, _problem(resp)))
        models = _problem(resp).get("models")  # any JSON object, not only a problem
        return models if isinstance(models, list) else []

    def reconstruct(self, frame: bytes, idempotency_key: str) -> bytes:
        return self._post("/v1/reconstruct", frame, idempotency_key).content

    def _post(
        self, path: str, frame: bytes, key: str, extra: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {
            **self.headers,
            **(extra or {}),
            "Content-Type": "application/octet-stream",
            "Idempotency-Key": key,
        }
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                resp = self.http.post(
                    self.base_url + path, content=frame, headers=headers, timeout=self.timeout
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if resp.status_code < 300:
                    return resp
                problem = _problem(resp)
                if resp.status_code in (401, 403):
                    raise AuthError(
                        resp.status_code,
                        problem,
                        f"cloud refused the API key: {_why(resp, problem)}",
                    )
                if not retryable(resp.status_code, problem):
                    raise CloudRejectedError(
                        resp.status_code,
                        problem,
                        f"cloud rejected the frame: {_why(resp, problem)}",
                    )
                last = f"HTTP {resp.status_code}"
                retry_after = retry_after_seconds(resp.headers.get("Retry-After"))
            if attempt < self.max_retries:
                delay = self.backoff(attempt, retry_after)
                log.info("frame %s: %s; retry %d in %.2f s", key, last, attempt + 1, delay)
                self.sleep(delay)
        raise CloudUnavailableError(
            f"cloud unavailable after {self.max_retries + 1} attempts: {last}"
        )


def _why(resp: httpx.Response, problem: dict[str, Any]) -> str:
    """Status, URL and the best reason the answer gives: a 404 from a wrong URL has no detail."""
    reason = problem.get("detail") or problem.get("title") or resp.text[:200].strip()
    return (
        f"{resp.status_code} {resp.reason_phrase} from {resp.request.url}: {reason or '(no body)'}"
    )


def _problem(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
