"""`edged triton-repo`: a Triton model repository entry (edged/tools/triton_repo.py)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tr = sub.add_parser("triton-repo", help="write a Triton model repository entry for a model "
                        "(config.pbtxt for the onnxruntime backend, 1/model.onnx)")
    tr.add_argument("model", help="ONNX file, or builtin:<name> as in the config")
    tr.add_argument("-o", "--out", required=True, help="the model repository's directory")
    tr.add_argument("--name", help="the model's name on the server (default: the manifest's)")
    tr.add_argument("--max-batch", type=int, default=8,
                    help="max_batch_size for a graph with a symbolic batch dimension")
    tr.add_argument("--force", action="store_true", help="replace an existing entry")
    tr.set_defaults(func=cmd_triton_repo)


def cmd_triton_repo(args: argparse.Namespace) -> int:
    from edged.tools.triton_repo import write_repo

    print(write_repo(args.model, Path(args.out), args.name, args.max_batch, args.force))
    return 0
