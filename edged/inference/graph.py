"""Reading an ONNX file without the `onnx` package: which operator produced each graph
output (evidence the shapes alone do not give), and the header `edged inspect` shows.

A [1, 1, H, W] float map may hold probabilities (a Sigmoid ends the graph), logits (a
Conv or a Resize does) or class ids (an ArgMax, cast to float). ONNX Runtime exposes
no graph, and the `onnx` package is a build tool kept out of the daemon, so this reads
the few fields it needs straight from the model file's protobuf encoding: the graph's
nodes, each with its op_type, inputs and outputs. Initializers (the weights, nearly
all of the file) are skipped by their length prefix without being decoded.

Field numbers are those of onnx.proto (stable since ONNX 1.0): ModelProto.graph = 7;
GraphProto.node = 1; NodeProto.input = 1, output = 2, op_type = 4.
"""

from __future__ import annotations

import contextlib
import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Node:
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


class GraphReadError(ValueError):
    """The file is not the protobuf encoding of an ONNX model."""


def _varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise GraphReadError("truncated or malformed varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value start, value end) of each field in buf[start:end];
    for varints and fixed-size fields the span is the raw bytes."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, nxt = _varint(buf, pos)
        elif wire == 1:
            nxt = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            nxt = pos + length
        elif wire == 5:
            nxt = pos + 4
        else:
            raise GraphReadError(f"unsupported protobuf wire type {wire}")
        if nxt > end:
            raise GraphReadError("a field runs past the end of its message")
        yield field, wire, pos, nxt
        pos = nxt


def _node(buf: memoryview, start: int, end: int) -> Node:
    op, ins, outs = "", [], []
    for field, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if field == 4:
            op = bytes(buf[a:b]).decode("utf-8", "replace")
        elif field == 1:
            ins.append(bytes(buf[a:b]).decode("utf-8", "replace"))
        elif field == 2:
            outs.append(bytes(buf[a:b]).decode("utf-8", "replace"))
    return Node(op, tuple(ins), tuple(outs))


@contextlib.contextmanager
def _mapped(path: Path) -> Iterator[memoryview]:
    """The file's bytes, memory-mapped (a large model is paged in only where read)."""
    with open(path, "rb") as f:
        if f.seek(0, 2) == 0:
            raise GraphReadError(f"{path} is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            buf = memoryview(mm)
            try:
                yield buf
            finally:
                buf.release()


def read_nodes(path: Path) -> list[Node]:
    """The nodes of the model's main graph, in file order."""
    with _mapped(path) as buf:
        for field, wire, a, b in _fields(buf, 0, len(buf)):
            if field == 7 and wire == 2:
                return [_node(buf, na, nb) for nf, nw, na, nb in _fields(buf, a, b)
                        if nf == 1 and nw == 2]
    raise GraphReadError(f"{path} holds no ONNX graph")


def model_header(path: Path) -> dict[str, Any]:
    """IR version (ModelProto 1), producer name and version (2, 3) and opset imports (8:
    OperatorSetIdProto 1 domain, 2 version) of an ONNX file."""
    out: dict[str, Any] = {"ir_version": None, "producer": "", "opsets": {}}
    with _mapped(path) as buf:
        producer = ["", ""]
        for num, wire, a, b in _fields(buf, 0, len(buf)):
            if num == 1 and wire == 0:
                out["ir_version"] = _varint(buf, a)[0]
            elif num in (2, 3) and wire == 2:
                producer[num - 2] = bytes(buf[a:b]).decode("utf-8", "replace")
            elif num == 8 and wire == 2:
                domain, version = "", None
                for n2, w2, a2, b2 in _fields(buf, a, b):
                    if n2 == 1 and w2 == 2:
                        domain = bytes(buf[a2:b2]).decode("utf-8", "replace")
                    elif n2 == 2 and w2 == 0:
                        version = _varint(buf, a2)[0]
                out["opsets"][domain or "ai.onnx"] = version
        out["producer"] = " ".join(p for p in producer if p)
    return out


# ops that move or resize values without changing what they mean (a probability stays a
# probability): walked through back to the op that decides it
VALUE_PRESERVING = frozenset({"Cast", "Identity", "Reshape", "Squeeze", "Unsqueeze",
                              "Transpose", "Resize", "Upsample", "Slice", "Flatten"})


def producers(nodes: list[Node]) -> dict[str, Node]:
    """Tensor name -> the node that outputs it."""
    return {o: n for n in nodes for o in n.outputs}


def output_ops(path: Path, outputs: list[str]) -> dict[str, tuple[str, ...]]:
    """For each named graph output, the op types that make it, last first, following
    value-preserving steps back (Cast, Identity, Reshape, Squeeze, Unsqueeze, Transpose,
    Resize, Slice) to the op that decides what the values mean: ("Cast", "ArgMax"),
    ("Resize", "Sigmoid"), ("Conv",). Empty for an output no node makes."""
    made_by = producers(read_nodes(path))
    out: dict[str, tuple[str, ...]] = {}
    for name in outputs:
        chain: list[str] = []
        node = made_by.get(name)
        while node is not None and len(chain) < 16:
            chain.append(node.op_type)
            if node.op_type not in VALUE_PRESERVING or not node.inputs:
                break
            node = made_by.get(node.inputs[0])
        out[name] = tuple(chain)
    return out
