"""schemathesis, driven by the service's own OpenAPI document, against a real uvicorn.

Every documented operation is called with generated requests (with and without valid keys) and
the answers are checked against the document: no 5xx, only documented status codes and content
types, bodies that match their schemas. One check is left out, on purpose:
``positive_data_acceptance`` expects a 2xx for any body the schema allows, but a frame is
``format: binary`` (any bytes), and random bytes are rightly refused as a malformed frame (400).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_service.harness import running_cloud

SCHEMATHESIS = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.skipif(not Path(SCHEMATHESIS).exists(), reason="schemathesis is in the dev extra")
@pytest.mark.parametrize(
    "settings",
    [dict(api_keys="fuzz-key"), dict(api_keys="fuzz-key", metrics_key="scrape-key"), {}],
    ids=["upload-key", "metrics-keyed", "auth-off"],  # auth off reaches the query API too
)
def test_the_api_matches_its_openapi_document(tiny_bundle, tmp_path, settings):
    # A camera's long-poll held 0.2 s at most: each generated ?wait= would hold it up to 30 s.
    with running_cloud([tiny_bundle], refine_max_wait_s=0.2, **settings) as url:
        out = subprocess.run(
            [
                SCHEMATHESIS,
                "run",
                url + "/openapi.json",
                "-H",
                "Authorization: Bearer fuzz-key",
                # 30 examples an operation, two workers: the server answers one while the other
                # is generated (40 examples, one worker: 10 s a run on the CI machine)
                "--max-examples",
                "30",
                "--workers",
                "2",
                "--exclude-checks",
                "positive_data_acceptance",
                # an event stream never ends by design: tests/test_frames_api.py covers it
                "--exclude-path",
                "/v1/events",
                "--seed",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=tmp_path,
        )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", out.stdout)
    assert selected and int(selected[1]) == int(selected[2]) - 1  # all but the event stream
    assert f"Tested: {selected[1]}" in out.stdout
