"""The floors of the house, and a check that no import runs up one.

`python -m edged.tools.layers` reads every import in `edged/` (the AST, so function-level
imports count too), places each module on a floor and fails (exit 1) on:

- an edge from a floor to a higher one;
- an edge between two rooms of one floor (two stages, two outputs), unless it goes into
  that floor's shared base (`SHARED`);
- an edge into the outputs from anywhere but the top, or into an output's config section
  (`edged/outputs/<name>/settings.py`) from anywhere but the outputs and the top: the
  daemon reaches its outputs only through the sink base and what the top hands it, and
  the config loader gets the sections as values, so neither names an output;
- a module that no floor claims (a new package must be placed here first);
- an entry of `ALLOWED` that no longer occurs (the allow-list only shrinks);
- a module over `MAX_MODULE_LINES` lines or a class over `MAX_CLASS_LINES`, unless
  `OVERSIZE` names it, and an `OVERSIZE` entry that is within its limit now.

The floors are defined here and nowhere else; docs/architecture.md draws them.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# lowest first: (floor, {module prefix: room}); a module belongs to its longest prefix
# (a literal part beats a `*` at the same length). `*` stands for one part of the name:
# each package or module under edged/outputs (but `base`) is an output, a room of its
# own named by that part (room "*"), so a new output needs no line here.
FLOORS: list[tuple[str, dict[str, str]]] = [
    # the types everything shares: stdlib and numpy only
    ("types", {"edged": "types", "edged.results": "types", "edged.telemetry": "types",
               "edged.names": "types", "edged.errors": "types", "edged.redaction": "types",
               "edged.heap": "types"}),
    # the public subscriber library and the codec: nothing of the daemon
    ("wire", {"edged.wire": "wire"}),
    # the synthetic world (numpy + OpenCV), read by the synthetic source and the tools
    ("synth", {"edged.synth": "synth"}),
    # the stages, each a room of its own
    ("stages", {"edged.capture": "capture", "edged.inference": "inference",
                "edged.tracking": "tracking"}),
    # the config package (loader, errors, one schema module per section): one room
    ("config", {"edged.config": "config"}),
    # each output's config section, importing only the config package: data the config
    # loader is handed at run time, and an output may read another's (the rosbag2
    # recorder names its topics with the ros2 output's namespace)
    ("output settings", {"edged.outputs.*.settings": "settings"}),
    # what every output builds on
    ("output base", {"edged.outputs": "base", "edged.outputs.base": "base"}),
    # each output a room of its own
    ("outputs", {"edged.outputs.*": "*"}),
    ("daemon", {"edged.daemon": "daemon"}),
    # the composition root, the command line (the edged.cli package: one module per
    # command) and everything off the runtime path
    ("top", {"edged.app": "top", "edged.__main__": "top", "edged.cli": "top", "edged.tools": "top",
             "edged.training": "top"}),
]

# modules of a floor that the floor's other rooms may import (its shared base)
SHARED: set[str] = set()

# floors whose modules only these floors may import (besides their own room): the
# daemon names no output, and the config none of their sections
IMPORTED_ONLY_BY = {"outputs": {"top"}, "output settings": {"outputs", "top"}}

# edges let past the rules, (importer, imported): none. Kept so that the checker's own
# test can name one; an entry that no longer occurs is an error too.
ALLOWED: set[tuple[str, str]] = set()

# a module or class past these is doing more than one job: split it by job
MAX_MODULE_LINES = 700
MAX_CLASS_LINES = 300

# modules (dotted name) and classes (module.Class) let past those limits: none now. Only
# shrinks, as ALLOWED: an entry within its limit (or gone) is an error too.
OVERSIZE: set[str] = set()


@dataclass(frozen=True, slots=True)
class Place:
    floor: int
    room: str

    @property
    def name(self) -> str:
        return FLOORS[self.floor][0]


def place(module: str) -> Place | None:
    parts = module.split(".")
    best: tuple[tuple[int, int], int, str] | None = None  # ((parts, literal parts), floor, room)
    for i, (_, rooms) in enumerate(FLOORS):
        for prefix, room in rooms.items():
            pattern = prefix.split(".")
            # the package itself ("edged") claims only its __init__, not every module
            if len(parts) < len(pattern) or (prefix == "edged" and module != "edged"):
                continue
            head = parts[: len(pattern)]
            if any(p not in ("*", m) for p, m in zip(pattern, head, strict=True)):
                continue
            if "*" in pattern and head[pattern.index("*")] == "base":
                continue  # edged/outputs/base is the outputs' shared base, no output
            rank = (len(pattern), sum(p != "*" for p in pattern))
            if best is None or rank > best[0]:
                best = (rank, i, head[pattern.index("*")] if room == "*" else room)
    return None if best is None else Place(best[1], best[2])


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under `root` (the `edged` package folder)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The edged modules `module` imports anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m == "edged" or m.startswith("edged.")}


def violations(root: Path) -> list[tuple[str, str, str]]:
    """(importer, imported, why) for every edge that breaks a rule, allowed or not."""
    mods = modules(root)
    out = []
    for mod, path in mods.items():
        src = place(mod)
        if src is None:
            out.append((mod, "", "on no floor: place it in edged/tools/layers.py FLOORS"))
            continue
        for dep in sorted(imports(mod, path, set(mods))):
            dst = place(dep)
            if dst is None or dep == mod:
                continue
            if dst.floor > src.floor:
                why = f"{src.name} imports {dst.name}, a floor up"
            elif dst.floor == src.floor and dst.room != src.room and dep not in SHARED:
                why = f"{src.room} imports {dst.room}, another room of {src.name}"
            elif (dst.name in IMPORTED_ONLY_BY and src.room != dst.room
                  and src.name not in IMPORTED_ONLY_BY[dst.name]):
                why = (f"{src.name} names an output ({dst.room}); only "
                       f"{' and '.join(sorted(IMPORTED_ONLY_BY[dst.name]))} may")
            else:
                continue
            out.append((mod, dep, why))
    return out


def classes(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
    """(dotted name, first line, length in lines) of every class under `node`, nested
    ones too (a class inside a function is named after the function)."""
    for child in ast.iter_child_nodes(node):
        name = prefix
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{child.name}"
        if isinstance(child, ast.ClassDef):
            yield name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1
        yield from classes(child, name)


def oversize(root: Path) -> dict[str, str]:
    """Modules over MAX_MODULE_LINES and classes over MAX_CLASS_LINES: name -> what is
    too long, with its file (and line)."""
    out = {}
    for mod, path in modules(root).items():
        where = path.relative_to(root.parent)
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            out[mod] = f"{where}: module of {lines} lines, over {MAX_MODULE_LINES}"
        for name, line, length in classes(ast.parse(text, str(path)), mod):
            if length > MAX_CLASS_LINES:
                out[name] = f"{where}:{line}: class of {length} lines, over {MAX_CLASS_LINES}"
    return out


def check(root: Path, allowed: set[tuple[str, str]] = ALLOWED,
          oversize_allowed: set[str] = OVERSIZE) -> list[str]:
    """The errors: edges outside the allow-list, oversize modules and classes outside
    theirs, and allow-list entries that are no longer needed."""
    found = violations(root)
    errors = [f"{a} -> {b}: {why}" if b else f"{a}: {why}"
              for a, b, why in found if (a, b) not in allowed]
    present = {(a, b) for a, b, _ in found}
    errors += [f"{a} -> {b}: in ALLOWED but no longer imported; remove the entry"
               for a, b in sorted(allowed - present)]
    big = oversize(root)
    errors += [f"{name}: {why}: split it by job" for name, why in sorted(big.items())
               if name not in oversize_allowed]
    errors += [f"{name}: in OVERSIZE but within its limit (or gone); remove the entry"
               for name in sorted(oversize_allowed - set(big))]
    return errors


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[1]
    errors = check(root)
    for line in errors:
        print(line)
    if not errors:
        print(f"layers: ok ({len(ALLOWED)} allowed edges, {len(OVERSIZE)} oversize left)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
