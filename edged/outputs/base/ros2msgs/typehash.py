"""RIHS01 type hashes (REP-2011), as ROS 2 Iron and Jazzy compute them, for the message
types edged writes.

A ROS 2 type hash is SHA-256 over the canonical JSON of the type's description: the type
(`pkg/msg/Type`, its fields in order, each with a `FieldType`: `type_id`, `capacity`,
`string_capacity`, `nested_type_name`) and every type it references, directly or not,
sorted by name. Constants, default values and comments are not part of it, so the
definitions in `msgdefs` (constants left out) hash like the upstream files.
rosidl_generator_type_description writes the JSON with `json.dumps` defaults
(separators `", "` and `": "`), which is what this module hashes.

Where a hash is used: rosbag2 (Iron and later) stores it per topic (`type_description_hash`
in metadata.yaml, `topic_type_hash` in the MCAP channel), and the RMW announces it in DDS
USER_DATA as `typehash=RIHS01_<hex>;` (rmw_dds_common), which `ros2 topic info -v` shows.

tests/e2e/test_rosbag.py checks these hashes against `rosbags`' own implementation and the
hashes a real rosbag2 (ros2/rosbag2's test bags) recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any

from edged.outputs.base.ros2msgs.msgdefs import DEFS

# type_description_interfaces/msg/FieldType: the ids of the primitive types. A .msg `char`
# is IDL `uint8` and `byte` is `octet` (rosidl_adapter's MSG_TYPE_TO_IDL).
_PRIMITIVE = {"int8": 2, "uint8": 3, "char": 3, "int16": 4, "uint16": 5, "int32": 6,
              "uint32": 7, "int64": 8, "uint64": 9, "float32": 10, "float64": 11,
              "bool": 15, "byte": 16, "string": 17, "wstring": 18}
_BOUNDED = {"string": 21, "wstring": 22}  # string<=N, wstring<=N
# added to a type id: fixed array T[N], bounded sequence T[<=N], unbounded sequence T[]
_ARRAY, _BOUNDED_SEQUENCE, _SEQUENCE = 48, 96, 144

_FIELD = re.compile(r"(?P<type>\S+)\s+(?P<name>[A-Za-z_]\w*)\s*(?P<const>=)?")
_TYPE = re.compile(r"(?P<base>[^\[<]+)(?:<=(?P<strcap>\d+))?(?:\[(?P<bound><=)?(?P<n>\d*)\])?$")


def full_name(type_ref: str, package: str) -> str:
    """`pkg/msg/Type` for a field's type as a .msg file writes it (`Type` is in the same
    package, `pkg/Type` names another)."""
    parts = type_ref.split("/")
    if len(parts) == 1:
        return f"{package}/msg/{parts[0]}"
    if len(parts) == 2:
        return f"{parts[0]}/msg/{parts[1]}"
    return type_ref


def _field(line: str, package: str) -> dict[str, Any] | None:
    """The field a .msg line declares, as REP-2011 describes it; None for a blank line, a
    comment or a constant."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    m = _FIELD.match(line)  # type and name; a default value or a comment may follow
    if m is None:
        raise ValueError(f"cannot read the field in {line!r}")
    if m.group("const"):
        return None
    t = _TYPE.match(m.group("type"))
    if t is None:
        raise ValueError(f"cannot read the field type in {line!r}")
    base, strcap = t.group("base"), t.group("strcap")
    nested = ""
    if strcap is not None:
        type_id = _BOUNDED[base]
    elif base in _PRIMITIVE:
        type_id = _PRIMITIVE[base]
    else:
        type_id, nested = 1, full_name(base, package)  # NESTED_TYPE
    capacity = 0
    if t.group("n") is not None and t.group("bound") is None and t.group("n") == "":
        type_id += _SEQUENCE
    elif t.group("n"):
        capacity = int(t.group("n"))
        type_id += _BOUNDED_SEQUENCE if t.group("bound") else _ARRAY
    return {"name": m.group("name"),
            "type": {"type_id": type_id, "capacity": capacity,
                     "string_capacity": int(strcap or 0), "nested_type_name": nested}}


def _fields(name: str, definition: str) -> list[dict[str, Any]]:
    package = name.split("/")[0]
    fields = [f for f in (_field(x, package) for x in definition.splitlines()) if f]
    # rosidl gives an empty message one placeholder member
    return fields or [{"name": "structure_needs_at_least_one_member",
                       "type": {"type_id": 3, "capacity": 0, "string_capacity": 0,
                                "nested_type_name": ""}}]


def type_description(name: str, defs: Mapping[str, str] = DEFS) -> dict[str, Any]:
    """The hashed form of `name`'s TypeDescription (type_description_interfaces), from
    .msg definitions `defs` (`pkg/msg/Type` -> text)."""
    described: dict[str, list[dict[str, Any]]] = {}
    todo = [name]
    while todo:
        n = todo.pop()
        if n in described:
            continue
        if n not in defs:
            raise KeyError(f"{n}: no definition (needed by {name})")
        described[n] = _fields(n, defs[n])
        todo += [f["type"]["nested_type_name"] for f in described[n]
                 if f["type"]["nested_type_name"]]
    return {"type_description": {"type_name": name, "fields": described[name]},
            "referenced_type_descriptions": [{"type_name": n, "fields": described[n]}
                                             for n in sorted(described) if n != name]}


def rihs01_of(name: str, defs: Mapping[str, str]) -> str:
    """`RIHS01_<sha256 hex>` of `name` described by `defs`."""
    text = json.dumps(type_description(name, defs))  # separators ", " ": " as rosidl's
    return "RIHS01_" + hashlib.sha256(text.encode()).hexdigest()


@cache
def rihs01(name: str) -> str:
    """The type hash of one of edged's message types (`edged.outputs.base.ros2msgs.msgdefs`), e.g.
    `rihs01("sensor_msgs/msg/Image")`."""
    return rihs01_of(name, DEFS)


def user_data(name: str) -> bytes:
    """The DDS USER_DATA an RMW of Iron or later announces for an endpoint of this type
    (rmw_dds_common's `encode_type_hash_for_user_data_qos`)."""
    return f"typehash={rihs01(name)};".encode()


def parse_schema(name: str, schema: str) -> dict[str, str]:
    """A rosbag2 MCAP `ros2msg` schema (the type's definition, then `MSG: pkg/Type`
    sections for the types it uses) as `pkg/msg/Type` -> definition."""
    parts = re.split(r"^={80}\n", schema, flags=re.M)
    defs = {name: parts[0]}
    for part in parts[1:]:
        head, _, body = part.partition("\n")
        if not head.startswith("MSG: "):
            raise ValueError(f"{name}: schema section without a MSG: line ({head!r})")
        defs[full_name(head[5:].strip(), "")] = body
    return defs
