"""The cloud's service layer: what a request does, apart from how it came over HTTP.

Routes (``cloud_service.routes``) read parameters, headers and bodies, and answer status codes;
they call these modules for the work: ``inference`` (decode, classify, reconstruct, keep),
``idempotent`` (one answer per Idempotency-Key) and ``frames`` (reads of the results store).
"""
