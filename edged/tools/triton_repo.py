"""`edged triton-repo MODEL -o DIR`: a Triton model repository entry for edged's model.

Writes DIR/<name>/config.pbtxt (the onnxruntime backend; inputs and outputs with their
names, dtypes and dims as the graph has them; dynamic batching where the graph's batch
dimension is symbolic) and DIR/<name>/1/model.onnx. The server side of `model.triton`
is then `tritonserver --model-repository DIR`.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from edged.config import ConfigError, parse_config
from edged.config.model import BUILTIN_PREFIX
from edged.errors import UserError
from edged.inference.formats import TensorInfo
from edged.inference.runner import ModelOptions, ModelRunner

__all__ = ["RepoError", "config_pbtxt", "write_repo"]

# numpy dtype name -> Triton's model-config data type
CONFIG_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64",
                "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16",
                "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RepoError(UserError, ValueError):
    """The model cannot become a repository entry; the message says why."""


def _resolve(model: str) -> Path:
    """A path, or builtin:<file> / builtin:<variant set> as a config writes it."""
    if not model.startswith(BUILTIN_PREFIX):
        return Path(model)
    try:
        cfg = parse_config(f"model: {{path: {model!r}}}\n"
                           "cameras: {c: {source: synthetic}}\n")
    except ConfigError as e:
        raise RepoError(str(e)) from None
    return Path(cfg.model.path)


def _tensor(t: TensorInfo, batched: bool) -> str:
    dtype = CONFIG_TYPES.get(t.dtype)
    if dtype is None:
        raise RepoError(f"tensor {t.name}: dtype {t.dtype} has no Triton type")
    dims = [d if isinstance(d, int) and d >= 0 else -1 for d in t.shape]
    if batched:
        dims = dims[1:]
    return (f"  {{\n    name: \"{t.name}\"\n    data_type: {dtype}\n"
            f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}")


def config_pbtxt(name: str, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 max_batch: int) -> str:
    """The model's config.pbtxt; `max_batch` 0: the tensors' own (fixed) batch dimension."""
    batched = max_batch > 0
    lines = [f'name: "{name}"', 'backend: "onnxruntime"', f"max_batch_size: {max_batch}",
             "input [", ",\n".join(_tensor(t, batched) for t in inputs), "]",
             "output [", ",\n".join(_tensor(t, batched) for t in outputs), "]"]
    if batched:
        # frames of several cameras and daemons into one run; none waits for company
        lines += ["dynamic_batching {", "  max_queue_delay_microseconds: 0", "}"]
    return "\n".join(lines) + "\n"


def write_repo(model: str, out: Path, name: str | None = None, max_batch: int = 8,
               force: bool = False) -> Path:
    """Write the entry; returns its directory. RepoError for what cannot be written."""
    path = _resolve(model)
    runner = ModelRunner(ModelOptions(path=path, warmup_runs=0))
    name = name or runner.model_id
    if not _NAME.match(name):
        raise RepoError(f"model name {name!r}: letters, digits, '_', '.' and '-' only "
                        f"(--name sets another)")
    first = runner.inputs[0].shape
    # a symbolic first dimension is the batch Triton may fill
    batch = max_batch if first and not isinstance(first[0], int) else 0
    if batch and any(not o.shape or isinstance(o.shape[0], int) for o in runner.outputs):
        batch = 0  # an output without the batch dimension: Triton cannot split it
    entry = out / name
    if entry.exists():
        if not force:
            raise RepoError(f"{entry} exists (--force replaces it)")
        shutil.rmtree(entry)
    (entry / "1").mkdir(parents=True)
    (entry / "config.pbtxt").write_text(config_pbtxt(name, runner.inputs, runner.outputs,
                                                     batch))
    # a copy, not a link: the repository may be mounted into a container or shipped
    shutil.copyfile(path, entry / "1" / "model.onnx")
    os.chmod(entry / "1" / "model.onnx", 0o644)
    return entry
