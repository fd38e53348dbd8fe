"""Every exception the edge client raises, in one place.

    EdgeError                    base class: catch this to catch everything below
    ├── BundleError              the model bundle is missing, unreadable or inconsistent
    ├── ImageError               an input image cannot be read or does not fit the model
    │   └── ImageRefusedError    never will, as it is: a decompression bomb, or a whole image
    │                            larger than the cloud serves (retrying does not help)
    ├── QueueError               the store-and-forward queue refused or lost track of a frame
    │   ├── QueueFullError       the queue is at its size limit and its policy rejects new frames
    │   │                        (for now: a later capture may fit once frames are delivered)
    │   └── FrameTooLargeError   this frame alone exceeds the queue's size limit (never fits)
    └── UploadError              a frame could not be delivered to the cloud
        ├── CloudUnavailableError    the cloud did not answer, or answered 5xx/429, after retries
        └── CloudRejectedError       the cloud refused the frame (4xx): retrying will not help
            └── AuthError            401/403: the API key is missing or wrong

``CloudRejectedError.problem`` holds the cloud's RFC 9457 problem+json body, when it sent one.
"""

from __future__ import annotations

from typing import Any


class EdgeError(Exception):
    """Base of every edge-client error."""


class BundleError(EdgeError):
    pass


class ImageError(EdgeError):
    pass


class ImageRefusedError(ImageError):
    pass


class QueueError(EdgeError):
    pass


class QueueFullError(QueueError):
    pass


class FrameTooLargeError(QueueError):
    pass


class UploadError(EdgeError):
    pass


class CloudUnavailableError(UploadError):
    pass


class CloudRejectedError(UploadError):
    def __init__(self, status: int, problem: dict[str, Any] | None, message: str):
        super().__init__(message)
        self.status, self.problem = status, problem or {}


class AuthError(CloudRejectedError):
    pass
