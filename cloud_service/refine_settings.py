"""Settings of refinement on demand (issue 35), from ``SPIC_CLOUD_REFINE_*`` variables.

A class of their own beside ``cloud_service.settings.Settings``: the back-channel's bounds live
with it, and ``docs/configuration.md`` lists them in a section of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class RefineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPIC_CLOUD_REFINE_", extra="ignore")

    # A request waits this long for its camera; then it is `expired` (the camera was offline).
    ttl_s: float = Field(3600.0, gt=0)
    # A request handed to a camera but not answered within this long is handed out again, so a
    # camera restarted between request and answer still answers it.
    redeliver_s: float = Field(30.0, gt=0)
    # The longest `?wait=` a camera's long-poll is held (seconds); a longer one is cut to it.
    max_wait_s: float = Field(30.0, ge=0)
    # How often a held long-poll looks in the database (requests made by another worker or
    # replica); one made by this process wakes it at once.
    poll_s: float = Field(1.0, gt=0)
    # Open requests (pending or delivered) per camera; a request past them is answered 429.
    max_pending: int = Field(16, ge=1)
    # Requests handed to a camera in one answer (long-poll or piggybacked on an upload).
    batch: int = Field(4, ge=1, le=32)
    # A camera's answer (a SPIC frame, a JPEG or an AVIF) larger than this is refused (413)
    # before it is read whole.
    max_body_bytes: int = Field(16 << 20, ge=1024)
    # A JPEG or AVIF whose header declares more pixels than this is refused (422) undecoded.
    max_pixels: int = Field(50_000_000, ge=1)
    # Requests past their TTL are marked expired every interval_s, expire_batch at a time.
    interval_s: float = Field(2.0, gt=0)
    expire_batch: int = Field(200, ge=1)  # rows per statement of expiry and pruning
    # Requests and their pictures are kept this many days (0: forever), and the stored pictures
    # at most max_mb in all, the oldest dropped first (0: no bound).
    keep_days: float = Field(30.0, ge=0)
    max_mb: float = Field(1024.0, ge=0)  # the stored pictures' bytes, in MiB
    # Rules that ask by themselves after a classification, `;` between rules, `,` between the
    # conditions of one: `label=garbage truck,min_confidence=0.8;unknown`. Empty: none.
    rules: str = ""
    # What a rule asks for: layer, whole or original.
    rules_kind: str = Field("layer", pattern="^(layer|whole|original)$")

    @field_validator("rules")
    @classmethod
    def _readable(cls, v: str) -> str:
        parse_rules(v)  # a rule that cannot be read stops the service at start
        return v


@dataclass(frozen=True)
class Rule:
    """One ``SPIC_CLOUD_REFINE_RULES`` rule: every condition it names must hold."""

    label: str | None = None
    min_confidence: float | None = None
    unknown: bool = False

    def matches(self, answer: dict[str, Any]) -> bool:
        label = answer.get("label")
        if self.unknown and not (answer.get("unknown") is True or label in (None, "unknown")):
            return False
        if self.label is not None and str(label or "").lower() != self.label.lower():
            return False
        confidence = answer.get("confidence")
        return self.min_confidence is None or (
            isinstance(confidence, int | float) and confidence >= self.min_confidence
        )


def parse_rules(text: str) -> list[Rule]:
    """``label=garbage truck,min_confidence=0.8;unknown`` -> rules; ValueError names a bad one."""
    rules = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        fields: dict[str, Any] = {}
        for cond in filter(None, (c.strip() for c in part.split(","))):
            name, eq, value = cond.partition("=")
            name, value = name.strip(), value.strip()
            if name == "unknown" and not eq:
                fields["unknown"] = True
            elif name == "label" and value:
                fields["label"] = value
            elif name == "min_confidence" and value:
                fields["min_confidence"] = float(value)
            else:
                raise ValueError(
                    f"SPIC_CLOUD_REFINE_RULES: cannot read {cond!r} (label=..., "
                    "min_confidence=..., unknown)"
                )
        rules.append(Rule(**fields))
    return rules


@lru_cache
def get_refine_settings() -> RefineSettings:
    return RefineSettings()
