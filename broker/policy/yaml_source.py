"""Read YAML into plain data safely, keeping the file and line of every value.

The YAML is composed into nodes by PyYAML's safe composer (no Python tags, no object
construction) and turned into plain data here, so that:

* duplicate keys are errors (a plain safe loader silently keeps the last one);
* alias and merge-key bombs stop after a fixed number of expanded nodes instead of eating
  memory ("billion laughs" ends in milliseconds);
* every value's file and line go into a `LineIndex`, so a schema error found later, even
  after `extends:` merged several files, is reported as `FILE:LINE: message`;
* `${VAR}` and `${VAR:-default}` in string values are expanded from the environment.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ..errors import PolicyIssue

if TYPE_CHECKING:
    import yaml  # imported where a document is read: `from broker import Broker` does not pay for PyYAML

__all__ = [
    "MAX_ALIAS_EXPANSIONS",
    "MAX_NODES",
    "LineIndex",
    "Where",
    "expand_env",
    "issues_from_validation",
    "read_yaml",
]

Where = tuple[str, int]

MAX_NODES = 100_000
"""Most YAML nodes one document may expand to (aliases counted every time they are used)."""
MAX_ALIAS_EXPANSIONS = 10_000
"""Most times one document may reuse an anchored node through an alias or a merge key."""

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_ENV_REF = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class LineIndex:
    """Where each value of a parsed document came from: (file, line) per container member.

    Keyed by container identity, holding the containers alive, so it keeps working after
    documents from several files were merged into new containers.
    """

    def __init__(self) -> None:
        self._members: dict[int, tuple[object, dict[Any, Where]]] = {}

    def record(self, container: dict[Any, Any] | list[Any], key: Any, where: Where) -> None:
        entry = self._members.get(id(container))
        if entry is None:
            entry = (container, {})
            self._members[id(container)] = entry
        entry[1][key] = where

    def where_of(self, container: object, key: Any) -> Where | None:
        entry = self._members.get(id(container))
        return None if entry is None else entry[1].get(key)

    def lookup(self, root: Any, path: Iterable[Any], default: Where) -> Where:
        """The deepest known location along `path`; steps that do not exist are skipped."""
        best, node = default, root
        for step in path:
            if isinstance(node, dict) and step not in node:
                step = _key_named(node, step)  # pydantic reports a non-string key by its text
                if step is None:
                    continue
            elif not isinstance(node, dict) and not (
                isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)
            ):
                continue
            best = self.where_of(node, step) or best
            node = node[step]
        return best


def _key_named(node: dict[Any, Any], text: Any) -> Any:
    """The key of `node` whose text is `text` (a date or number key named as a string), or None."""
    wanted = str(text)
    return next((key for key in node if not isinstance(key, str) and wanted in (str(key), repr(key))), None)


class _Limit(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message


class _Builder:
    """Turns composed YAML nodes into plain data, recording lines and checking limits."""

    def __init__(self, file: str, index: LineIndex, issues: list[PolicyIssue], env: Mapping[str, str] | None):
        import yaml

        self.file, self.index, self.issues, self.env = file, index, issues, env
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.alias_uses = 0
        self.seen: set[int] = set()
        self.active: set[int] = set()

    def issue(self, node: yaml.Node, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, node.start_mark.line + 1, message))

    def build(self, node: yaml.Node) -> Any:
        import yaml

        self.count += 1
        line = node.start_mark.line + 1
        if self.count > MAX_NODES:
            raise _Limit(line, f"document expands to more than {MAX_NODES} YAML nodes; refused")
        if id(node) in self.seen:
            self.alias_uses += 1
            if self.alias_uses > MAX_ALIAS_EXPANSIONS:
                raise _Limit(line, f"more than {MAX_ALIAS_EXPANSIONS} alias expansions; refused")
        self.seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        if id(node) in self.active:
            raise _Limit(line, "recursive alias; refused")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return self.sequence(node)
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node)
            raise _Limit(line, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self.issue(node, f"unsupported YAML tag {node.tag!r}")
            return None
        try:
            value = self.constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:  # e.g. an integer past Python's int-string limit
            self.issue(node, f"cannot read the value {node.value[:20]!r}...: {str(exc).splitlines()[0][:120]}")
            return None
        if isinstance(value, str) and self.env is not None:
            value, problems = expand_env(value, self.env)
            for problem in problems:
                self.issue(node, problem)
        return value

    def sequence(self, node: yaml.SequenceNode) -> list[Any]:
        if node.tag != f"{_TAG}seq":
            self.issue(node, f"unsupported YAML tag {node.tag!r}")
        out: list[Any] = []
        for item in node.value:
            out.append(self.build(item))
            self.index.record(out, len(out) - 1, (self.file, item.start_mark.line + 1))
        return out

    def mapping(self, node: yaml.MappingNode) -> dict[Any, Any]:
        if node.tag != f"{_TAG}map":
            self.issue(node, f"unsupported YAML tag {node.tag!r}")
        import yaml

        out: dict[Any, Any] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == f"{_TAG}merge":
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.issue(key_node, "mapping keys must be plain scalars")
                continue
            key = self.build(key_node)
            line = key_node.start_mark.line + 1
            if key in out:
                first = self.index.where_of(out, key)
                self.issue(key_node, f"duplicate key {key!r} (first given on line {first[1] if first else '?'})")
                continue
            out[key] = self.build(value_node)
            self.index.record(out, key, (self.file, line))
        for merge_node in merges:  # YAML merge keys: explicit keys win, earlier merges win
            sources = merge_node.value if isinstance(merge_node, yaml.SequenceNode) else [merge_node]
            for source in sources:
                merged = self.build(source)
                if not isinstance(merged, dict):
                    self.issue(source, "a merge key (<<) takes a mapping or a list of mappings")
                    continue
                for key, value in merged.items():
                    if key not in out:
                        out[key] = value
                        where = self.index.where_of(merged, key) or (self.file, source.start_mark.line + 1)
                        self.index.record(out, key, where)
        return out


def expand_env(text: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}` and `${VAR:-default}` (default when unset or empty); `$$` is a literal `$`."""
    problems: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        inner = match.group(1)
        name, sep, default = inner.partition(":-")
        if not _ENV_NAME.fullmatch(name):
            problems.append(f"bad environment reference ${{{inner}}}: use ${{NAME}} or ${{NAME:-default}}")
            return ""
        value = env.get(name)
        if sep:
            return value if value else default
        if value is None:
            problems.append(f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
            return ""
        return value

    return _ENV_REF.sub(substitute, text), problems


def read_yaml(
    text: str, file: str, index: LineIndex, issues: list[PolicyIssue], *, env: Mapping[str, str] | None = None
) -> Any:
    """Parse one YAML document into plain data, recording lines in `index`; problems go to `issues`.

    `env` turns on `${VAR}` expansion in string values.  Returns None when the document is
    empty or could not be parsed.
    """
    import yaml

    last = text.count("\n") + 1
    try:
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = min(mark.line + 1, last) if mark is not None else 1
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        issues.append(PolicyIssue(file, line, f"YAML syntax error: {problem}"))
        return None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (control characters, NUL)
        position = exc.position if isinstance(exc.position, int) else 0
        line = min(text[:position].count("\n") + 1, last)
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        issues.append(PolicyIssue(file, line, f"YAML does not allow the character U+{ord(char):04X} ({exc.reason})"))
        return None
    except yaml.YAMLError as exc:
        issues.append(PolicyIssue(file, 1, f"YAML error: {exc}"))
        return None
    if node is None:
        return None
    builder = _Builder(file, index, issues, env)
    try:
        return builder.build(node)
    except _Limit as exc:
        issues.append(PolicyIssue(file, exc.line, exc.message))
        return None


def issues_from_validation(
    exc: ValidationError,
    *,
    root: Any,
    prefix: tuple[Any, ...],
    index: LineIndex,
    default: Where,
    known_keys: Iterable[str] = (),
) -> list[PolicyIssue]:
    """Map each pydantic error's location back to the YAML line it came from."""
    out: list[PolicyIssue] = []
    keys = sorted(set(known_keys))
    for err in exc.errors(include_url=False):
        loc = prefix + tuple(err["loc"])
        file, line = index.lookup(root, loc, default)
        parent = _dotted(root, loc[:-1]) if err["type"] in ("extra_forbidden", "missing") else _dotted(root, loc)
        where = f"{parent}: " if parent else ""
        if err["type"] == "extra_forbidden":
            key = str(loc[-1])
            close = difflib.get_close_matches(key, keys, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            message = f"{where}unknown key {key!r}{hint}"
        elif err["type"] == "missing":
            message = f"{where}missing required key {str(loc[-1])!r}"
        else:
            text = re.sub(r" or instance of \w+", "", str(err["msg"]).removeprefix("Value error, "))
            got = err.get("input")
            shown = f" (got {got!r})" if isinstance(got, (str, int, float, bool)) and len(repr(got)) < 60 else ""
            if shown in text or str(loc[-1]).endswith("_env"):  # said already, or maybe a secret
                shown = ""
            message = f"{where}{text}{shown}"
        out.append(PolicyIssue(file, line, message))
    return out


def _dotted(root: Any, loc: tuple[Any, ...]) -> str:
    """`routes[2].price` for a location, leaving out pydantic's union-member steps."""
    parts: list[str] = []
    node = root
    for step in loc:
        if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
            parts.append(f"[{step}]")
        elif isinstance(node, dict) and step in node:
            parts.append(f".{step}" if parts else str(step))
        else:
            continue
        node = node[step]
    return "".join(parts)
