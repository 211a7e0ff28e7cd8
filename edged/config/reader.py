"""Step 1 of loading: YAML text -> plain data, with the line of every key path.

``Reader`` composes the YAML into nodes and turns them into plain dicts/lists/scalars,
recording the line of every key and list item (keyed by its path in the document),
rejecting duplicate keys and substituting ``${VAR}`` in string scalars.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import yaml

from edged.config.errors import NO_VALUE, ConfigError, ConfigIssue, Loc, format_loc

# values a config may expand to; a 64-camera config with every option set is ~5,000
MAX_YAML_VALUES: Final = 100_000
# Nesting of mappings and lists: a real config is 5 deep (cameras.NAME.budget.latency_ms);
# PyYAML composes recursively, so thousands of levels would exhaust Python's stack.
MAX_YAML_DEPTH: Final = 64
# The config file is read up to this many bytes; a real one is a few KB, and reading
# without a bound lets `-c /dev/zero` (or a wrong file) take all the memory.
MAX_CONFIG_BYTES: Final = 1 << 20


class _LineLoader(yaml.SafeLoader):
    """Our own SafeLoader subclass, so nothing we do touches yaml.SafeLoader's tables."""

    file = "<string>"
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        # bounded before PyYAML recurses into it: a located error, not a RecursionError
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError([ConfigIssue(
                    self.file, mark.line + 1, "", NO_VALUE,
                    f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep",
                    mark.column + 1)])
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


_MERGE_TAG = "tag:yaml.org,2002:merge"
# `$${` is an escaped literal `${`; `${NAME}` / `${NAME:-default}`; any other `${` is malformed.
_ENV_RE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    return f"the scalar {node.value!r}"


class Reader:
    """Turns YAML text into plain data plus the line of every key path."""

    def __init__(self, file: str, env: Mapping[str, str]) -> None:
        self.file = file
        self.env = env
        self.lines: dict[Loc, int] = {}
        # path -> (text as written, text after ${VAR} substitution); error messages show the
        # text as written so a substituted password never ends up in a log.
        self.substituted: dict[Loc, tuple[str, str]] = {}
        # every value a ${VAR} put into the text: never shown anywhere (edged.redaction)
        self.inserted: set[str] = set()
        self.issues: list[ConfigIssue] = []
        # Paths whose ${VAR} could not be substituted: validating the raw text there would
        # only add a confusing follow-on error.
        self.unsubstituted: set[Loc] = set()
        self._active: set[int] = set()  # nodes being walked, to stop on recursive aliases
        self._walked = 0  # values expanded so far, aliases counted each time they are used

    def read(self, text: str) -> dict[str, Any]:
        try:
            # the reader rejects control characters already in its constructor
            loader = _LineLoader(text)
            loader.file = self.file
        except yaml.reader.ReaderError as err:
            line = text.count("\n", 0, err.position) + 1
            col = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
            raise ConfigError([ConfigIssue(
                self.file, line, "", NO_VALUE,
                f"YAML syntax error: character #x{err.character:04x} is not allowed in YAML",
                col)]) from None
        try:
            node = loader.get_single_node()
            if node is None:
                raise ConfigError([ConfigIssue(
                    self.file, None, "", NO_VALUE,
                    "the config file is empty; it needs at least 'model' and 'cameras'",
                )])
            if not isinstance(node, yaml.MappingNode):
                raise ConfigError([ConfigIssue(
                    self.file, node.start_mark.line + 1, "", NO_VALUE,
                    "the top level must be a mapping of sections (model, cameras, ...), "
                    f"not {_node_kind(node)}",
                )])
            return self._mapping(loader, node, ())
        except yaml.YAMLError as err:
            raise ConfigError([self._yaml_issue(err)]) from None
        finally:
            loader.dispose()

    def _yaml_issue(self, err: yaml.YAMLError) -> ConfigIssue:
        if isinstance(err, yaml.MarkedYAMLError):
            mark = err.problem_mark or err.context_mark
            message = "YAML syntax error: " + ", ".join(p for p in (err.context, err.problem) if p)
            if err.context_mark and mark and err.context_mark.line != mark.line:
                message += f" (the construct starts on line {err.context_mark.line + 1})"
            if mark:
                return ConfigIssue(self.file, mark.line + 1, "", NO_VALUE, message, mark.column + 1)
            return ConfigIssue(self.file, None, "", NO_VALUE, message)
        return ConfigIssue(self.file, None, "", NO_VALUE, f"YAML error: {err}")

    def _issue(self, loc: Loc, line: int | None, value: object, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, format_loc(loc), value, message))

    def _walk(self, loader: _LineLoader, node: yaml.Node, loc: Loc) -> Any:
        self._walked += 1
        if self._walked > MAX_YAML_VALUES:
            # nested aliases ("billion laughs") expand exponentially: stop before the memory
            raise ConfigError([ConfigIssue(
                self.file, node.start_mark.line + 1, format_loc(loc), NO_VALUE,
                f"the config expands to more than {MAX_YAML_VALUES} values (YAML aliases are "
                "expanded each time they are used): nested aliases? A real config has a few "
                "hundred")])
        if len(loc) > MAX_YAML_DEPTH:
            # aliases nest what each stayed within the bound when it was composed
            raise ConfigError([ConfigIssue(
                self.file, node.start_mark.line + 1, "", NO_VALUE,
                f"mappings and lists nested more than {MAX_YAML_DEPTH} levels deep (with "
                "YAML aliases expanded)")])
        if id(node) in self._active:
            self._issue(loc, node.start_mark.line + 1, NO_VALUE, "recursive YAML alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(loader, node, loc)
            if isinstance(node, yaml.SequenceNode):
                items = []
                for index, item in enumerate(node.value):
                    self.lines[(*loc, index)] = item.start_mark.line + 1
                    items.append(self._walk(loader, item, (*loc, index)))
                return items
            try:
                value = loader.construct_object(node, deep=True)
            except ValueError as err:  # an int of over 4300 digits (int_max_str_digits)
                self._issue(loc, node.start_mark.line + 1, NO_VALUE, f"not a usable value: {err}")
                return None
            if isinstance(value, str):
                value = self._substitute(value, loc, node.start_mark.line + 1)
            return value
        finally:
            self._active.discard(id(node))

    def _mapping(self, loader: _LineLoader, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        result: dict[str, Any] = {}
        # YAML merge keys (`<<: *anchor`): merged keys first, the mapping's own keys override
        # them; earlier merge sources take precedence over later ones.
        sources: list[yaml.MappingNode] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
                continue
            candidates = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                          else [value_node])
            for candidate in candidates:
                if isinstance(candidate, yaml.MappingNode):
                    sources.append(candidate)
                else:
                    self._issue(loc, key_node.start_mark.line + 1, NO_VALUE,
                                "'<<' must merge a mapping or a list of mappings")
        for source in reversed(sources):
            result.update(self._walk(loader, source, loc) or {})
        first_line: dict[str, int] = {}
        for key_node, value_node in own:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                self._issue(loc, line, NO_VALUE, "keys must be plain strings")
                continue
            # The key's text as written: `on:` or `1:` stay strings instead of YAML 1.1's
            # True or 1, so camera names and field names are always what the user typed.
            key = key_node.value
            if key in first_line:
                shown = value_node.value if isinstance(value_node, yaml.ScalarNode) else NO_VALUE
                self._issue((*loc, key), line, shown,
                            f"duplicate key (first given on line {first_line[key]})")
                continue
            first_line[key] = line
            if key in result:  # a value merged in by '<<' is replaced (only then: O(n) keys)
                forget_below(self.lines, (*loc, key))
            self.lines[(*loc, key)] = line
            result[key] = self._walk(loader, value_node, (*loc, key))
        return result

    def _substitute(self, text: str, loc: Loc, line: int) -> str:
        if "$" not in text:
            return text
        problems: list[str] = []

        def replace(match: re.Match[str]) -> str:
            token = match.group(0)
            if token == "$${":
                return "${"
            name = match.group(1)
            if name is None:
                problems.append(
                    "malformed variable reference: write ${NAME} or ${NAME:-default}, "
                    "or $${ for a literal '${'"
                )
                return token
            value = self.env.get(name)
            default = match.group(2)
            # Shell semantics for ':-': an empty variable also takes the default.
            if default is not None and not value:
                return default
            if value is None:
                problems.append(
                    f"environment variable {name} is not set "
                    f"(set it, or give a default: ${{{name}:-default}})"
                )
                return token
            self.inserted.add(value)
            return value

        result = _ENV_RE.sub(replace, text)
        for problem in dict.fromkeys(problems):
            self._issue(loc, line, text, problem)
        if problems:
            self.unsubstituted.add(loc)
        if result != text:
            self.substituted[loc] = (text, result)
        return result


def forget_below(table: dict[Loc, Any], prefix: Loc) -> None:
    """Drop the entries for paths strictly inside `prefix` (its value was replaced)."""
    n = len(prefix)
    for loc in [loc for loc in table if len(loc) > n and loc[:n] == prefix]:
        del table[loc]
