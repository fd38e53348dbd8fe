"""ONNX Runtime sessions: the one factory the edge, the cloud and the tools open graphs with.

* An explicit intra-op thread count (default 1: a camera shares its cores with capture and I/O).
* Spinning off: idle threads sleep instead of burning power waiting for work.
* The cloud turns ONNX Runtime's memory arena off (``arena=False``): the arena keeps the peak of
  every request for the life of the process, and after a few 1 MiPx reconstructions an idle server
  held gigabytes. Without it memory goes back to the allocator after each run.
* The optimized graph is cached on disk, so a restart skips graph optimization. It is saved at the
  "extended" level, which ONNX Runtime documents as portable; hardware-specific layout passes are
  redone at load time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import onnxruntime as ort


def default_cache_dir() -> Path:
    return Path(os.environ.get("SPIC_CACHE_DIR", Path.home() / ".cache" / "spic"))


def make_session(
    model_path: str | Path,
    threads: int = 1,
    cache_dir: str | Path | Literal[False] | None = None,
    arena: bool = True,
) -> ort.InferenceSession:
    model_path = Path(model_path)
    opts = ort.SessionOptions()
    opts.enable_cpu_mem_arena = arena
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
    source = model_path
    if cache_dir is not False:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()[:16]
        cached = cache / f"{model_path.stem}-{digest}-ort{ort.__version__}.onnx"
        if cached.is_file():
            source = cached
        else:
            try:
                cache.mkdir(parents=True, exist_ok=True)
                save = ort.SessionOptions()
                save.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
                tmp = cached.with_suffix(f".tmp{os.getpid()}")
                save.optimized_model_filepath = str(tmp)
                ort.InferenceSession(str(model_path), save, providers=["CPUExecutionProvider"])
                os.replace(tmp, cached)
                source = cached
            except OSError:
                pass  # a read-only device still works, it just optimizes at every start
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(source), opts, providers=["CPUExecutionProvider"])
