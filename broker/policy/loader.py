"""Read policy YAML safely, keeping the line of every value, then build the typed policy.

The YAML is composed into nodes by PyYAML's safe composer (no Python tags, no object
construction) and turned into plain data here, so that:

* duplicate keys are errors (a plain safe loader silently keeps the last one);
* alias and merge-key bombs stop after a fixed number of expanded nodes instead of eating
  memory ("billion laughs" ends in milliseconds);
* every value's file and line go into a `LineIndex`, so a schema error found later, even
  after `extends:` merged several files, is reported as `FILE:LINE: message`;
* `${VAR}` and `${VAR:-default}` in string values are expanded from the environment.

`load_policy` is the entry point; errors are collected, never stopped at the first, and
raised together as one `PolicyError`.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from ..errors import PolicyError, PolicyIssue

if TYPE_CHECKING:
    from .catalog import Catalog
    from .schema import Policy

__all__ = [
    "LineIndex",
    "MAX_ALIAS_EXPANSIONS",
    "MAX_NODES",
    "expand_env",
    "issues_from_validation",
    "load_policy",
    "load_policy_text",
    "read_yaml",
]

Where = tuple[str, int]

MAX_NODES = 100_000
"""Most YAML nodes one document may expand to (aliases counted every time they are used)."""
MAX_ALIAS_EXPANSIONS = 10_000
"""Most times one document may reuse an anchored node through an alias or a merge key."""

_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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
            if isinstance(node, dict) and step in node:
                pass
            elif isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
                pass
            else:
                continue
            best = self.where_of(node, step) or best
            node = node[step]
        return best


class _Limit(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.line, self.message = line, message


class _Builder:
    """Turns composed YAML nodes into plain data, recording lines and checking limits."""

    def __init__(self, file: str, index: LineIndex, issues: list[PolicyIssue], env: Mapping[str, str] | None):
        self.file, self.index, self.issues, self.env = file, index, issues, env
        self.constructor = yaml.constructor.SafeConstructor()
        self.count = 0
        self.alias_uses = 0
        self.seen: set[int] = set()
        self.active: set[int] = set()

    def issue(self, node: yaml.Node, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, node.start_mark.line + 1, message))

    def build(self, node: yaml.Node) -> Any:
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
            return self.mapping(node)
        finally:
            self.active.discard(id(node))

    def scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            self.issue(node, f"unsupported YAML tag {node.tag!r}")
            return None
        value = self.constructor.construct_object(node)
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
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = min(mark.line + 1, text.count("\n") + 1) if mark is not None else 0
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        issues.append(PolicyIssue(file, line, f"YAML syntax error: {problem}"))
        return None
    except yaml.YAMLError as exc:
        issues.append(PolicyIssue(file, 0, f"YAML error: {exc}"))
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


# --------------------------------------------------------------------------- files and extends


def _read_document(
    path: Path, shown: str, index: LineIndex, issues: list[PolicyIssue], env: Mapping[str, str], at: Where
) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        issues.append(PolicyIssue(at[0], at[1], f"cannot read policy file {shown}: {exc.strerror or exc}"))
        return None
    data = read_yaml(text, shown, index, issues, env=env)
    if data is None:
        return {}
    if not isinstance(data, dict):
        issues.append(PolicyIssue(shown, 1, "a policy file must be a mapping (key: value) at the top"))
        return None
    return data


def _compose(
    data: dict[str, Any], base_dir: Path, shown: str, stack: tuple[Path, ...],
    index: LineIndex, issues: list[PolicyIssue], env: Mapping[str, str],
) -> dict[str, Any]:
    """Merge the files named by `extends:` under `data` (bases first, `data` last)."""
    _check_duplicate_route_ids(data, index, issues, (shown, 0))
    extends = data.get("extends")
    if extends is None:
        return data
    names = extends if isinstance(extends, list) else [extends]
    merged: dict[str, Any] = {}
    for i, name in enumerate(names):
        at = index.where_of(names, i) if isinstance(extends, list) else None
        at = at or index.where_of(data, "extends") or (shown, 0)
        if not isinstance(name, str) or not name:
            issues.append(PolicyIssue(at[0], at[1], "extends: takes a file name or a list of file names"))
            continue
        path = (base_dir / name).resolve()
        if path in stack:
            chain = " -> ".join(p.name for p in (*stack, path))
            issues.append(PolicyIssue(at[0], at[1], f"extends cycle: {chain}"))
            continue
        child = name if os.path.isabs(name) else os.path.normpath(os.path.join(os.path.dirname(shown), name))
        base = _read_document(path, child, index, issues, env, at)
        if base is None:
            continue
        base = _compose(base, path.parent, child, (*stack, path), index, issues, env)
        merged = _merge(merged, base, index, ())
    own = {k: v for k, v in data.items() if k != "extends"}
    for key in own:
        index.record(own, key, index.where_of(data, key) or (shown, 0))
    return _merge(merged, own, index, ())


def _merge(base: dict[str, Any], over: dict[str, Any], index: LineIndex, path: tuple[str, ...]) -> dict[str, Any]:
    """Field-wise merge: mappings recurse, routes merge by id, anything else is replaced."""
    out: dict[str, Any] = {}
    for source in (base, over):
        for key, value in source.items():
            where = index.where_of(source, key)
            here = (*path, key)
            if key in out and here == ("routes",) and isinstance(out[key], list) and isinstance(value, list):
                value = _merge_routes(out[key], value, index)
            elif key in out and here == ("catalog", "deployments") and isinstance(out[key], list) and isinstance(value, list):
                value = _concat(value, out[key], index)  # later files first: theirs become the defaults
            elif key in out and isinstance(out[key], dict) and isinstance(value, dict):
                value = _merge(out[key], value, index, here)
            out[key] = value
            if where is not None:
                index.record(out, key, where)
    return out


def _concat(first: list[Any], second: list[Any], index: LineIndex) -> list[Any]:
    out: list[Any] = []
    for source in (first, second):
        for i, item in enumerate(source):
            out.append(item)
            where = index.where_of(source, i)
            if where is not None:
                index.record(out, len(out) - 1, where)
    return out


def _merge_routes(base: list[Any], over: list[Any], index: LineIndex) -> list[Any]:
    out = _concat(base, [], index)
    position = {r["id"]: i for i, r in enumerate(out) if isinstance(r, dict) and isinstance(r.get("id"), str)}
    for i, route in enumerate(over):
        where = index.where_of(over, i)
        rid = route.get("id") if isinstance(route, dict) else None
        if isinstance(rid, str) and rid in position and isinstance(out[position[rid]], dict):
            out[position[rid]] = _merge(out[position[rid]], route, index, ("route",))
            slot = position[rid]
        else:
            out.append(route)
            slot = len(out) - 1
        if where is not None:
            index.record(out, slot, where)
    return out


def _check_duplicate_route_ids(data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], default: Where) -> None:
    routes = data.get("routes")
    if not isinstance(routes, list):
        return
    first: dict[str, int] = {}
    for i, route in enumerate(routes):
        rid = route.get("id") if isinstance(route, dict) else None
        if not isinstance(rid, str):
            continue
        if rid in first:
            file, line = index.where_of(route, "id") or index.where_of(routes, i) or default
            then = index.where_of(routes, first[rid])
            issues.append(PolicyIssue(file, line, f"duplicate route id {rid!r} (first on line {then[1] if then else '?'})"))
        else:
            first[rid] = i


def _copy_mapping(value: Any, env: Mapping[str, str], issues: list[PolicyIssue]) -> Any:
    """Deep-copy an already-parsed mapping, expanding `${VAR}` in its strings."""
    if isinstance(value, dict):
        return {k: _copy_mapping(v, env, issues) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy_mapping(v, env, issues) for v in value]
    if isinstance(value, str):
        text, problems = expand_env(value, env)
        issues.extend(PolicyIssue("<dict>", 0, p) for p in problems)
        return text
    return value


# --------------------------------------------------------------------------- entry points


def load_policy(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
    env: Mapping[str, str] | None = None,
) -> Policy:
    """Load a policy from a YAML file (path) or an already-parsed mapping.

    `catalog` replaces the built-in catalog; `env` replaces `os.environ` for `${VAR}`
    expansion.  Raises `PolicyError` listing every problem found, each as `FILE:LINE: message`.
    """
    environ = os.environ if env is None else env
    index = LineIndex()
    issues: list[PolicyIssue] = []
    if isinstance(source, Mapping):
        name, base_dir = "<dict>", Path.cwd()
        data = _copy_mapping(dict(source), environ, issues)
        data = _compose(data, base_dir, name, (), index, issues, environ)
    else:
        name = os.fspath(source)
        path = Path(name).resolve()
        document = _read_document(path, name, index, issues, environ, (name, 0))
        if document is None:
            raise PolicyError(issues)
        data = _compose(document, path.parent, name, (path,), index, issues, environ)
    return _finish(data, index, issues, name, catalog)


def load_policy_text(
    text: str, *, name: str = "<string>", catalog: Catalog | None = None, env: Mapping[str, str] | None = None
) -> Policy:
    """Load a policy from YAML text; `extends:` paths are relative to the working directory."""
    environ = os.environ if env is None else env
    index = LineIndex()
    issues: list[PolicyIssue] = []
    data = read_yaml(text, name, index, issues, env=environ)
    if data is None and issues:
        raise PolicyError(issues)
    if data is not None and not isinstance(data, dict):
        raise PolicyError([PolicyIssue(name, 1, "a policy must be a mapping (key: value) at the top")])
    data = _compose(data or {}, Path.cwd(), name, (), index, issues, environ)
    return _finish(data, index, issues, name, catalog)


def _finish(
    data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], name: str, catalog: Catalog | None
) -> Policy:
    from .resolver import build_policy

    policy = build_policy(data, index, issues, source=name, catalog=catalog)
    if issues or policy is None:
        unique = sorted(dict.fromkeys(issues), key=lambda i: (i.file != name, i.file, i.line))
        raise PolicyError(unique)
    return policy
