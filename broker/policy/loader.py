"""Load a policy: read its files, follow `extends:`, then build the typed policy.

`load_policy` is the entry point; errors are collected, never stopped at the first, and
raised together as one `PolicyError`, each as `FILE:LINE: message`.  Reading YAML with
lines is `yaml_source`; turning the merged data into routes and tenants is `resolver`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PolicyError, PolicyIssue
from .resolver import build_policy
from .yaml_source import LineIndex, Where, expand_env, read_yaml

if TYPE_CHECKING:
    from .catalog import Catalog
    from .loaded import Policy

__all__ = ["MAX_FILE_BYTES", "LoadedPolicy", "load_policy", "load_policy_document", "load_policy_text"]

_DICT = "<dict>"
MAX_FILE_BYTES = 1 << 20
"""Largest policy file read (1 MiB); a larger one, or anything but a regular file, is refused."""


@dataclass(frozen=True)
class LoadedPolicy:
    """A loaded policy with the merged document it came from and where each value was written."""

    policy: Policy
    data: dict[str, Any]
    index: LineIndex


# --------------------------------------------------------------------------- files and extends


class _Unreadable(Exception):
    def __init__(self, reason: str, line: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.line = reason, line


def _read_text(path: Path) -> str:
    """A regular file's text, at most `MAX_FILE_BYTES`; devices, FIFOs and directories are refused.

    The file is opened without blocking (a FIFO would otherwise wait for a writer) and checked
    on the open descriptor, so nothing can be swapped in between the check and the read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except (OSError, ValueError) as exc:
        raise _Unreadable(_reason(exc)) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise _Unreadable("it is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise _Unreadable("not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise _Unreadable(f"larger than {MAX_FILE_BYTES} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= MAX_FILE_BYTES:
            chunk = os.read(fd, MAX_FILE_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise _Unreadable(f"larger than {MAX_FILE_BYTES} bytes")
    except OSError as exc:
        raise _Unreadable(_reason(exc)) from None
    finally:
        os.close(fd)
    raw = b"".join(chunks)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Unreadable(f"not valid UTF-8 (byte {exc.start})", raw[: exc.start].count(b"\n") + 1) from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return str(exc)


def _resolve(base_dir: Path, name: str) -> Path:
    try:
        return (base_dir / name).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL byte, a symlink loop, a name too long
        raise _Unreadable(_reason(exc)) from None


def _read_document(
    path: Path, shown: str, index: LineIndex, issues: list[PolicyIssue], env: Mapping[str, str], at: Where
) -> dict[str, Any] | None:
    try:
        text = _read_text(path)
    except _Unreadable as exc:
        where = (shown, exc.line) if exc.line is not None else at
        issues.append(PolicyIssue(where[0], where[1], f"cannot read policy file {shown}: {exc.reason}"))
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
    _check_duplicate_route_ids(data, index, issues, _top(shown))
    extends = data.get("extends")
    if extends is None:
        return data
    names = extends if isinstance(extends, list) else [extends]
    merged: dict[str, Any] = {}
    for i, name in enumerate(names):
        at = index.where_of(names, i) if isinstance(extends, list) else None
        at = at or index.where_of(data, "extends") or _top(shown)
        if not isinstance(name, str) or not name:
            issues.append(PolicyIssue(at[0], at[1], "extends: takes a file name or a list of file names"))
            continue
        try:
            path = _resolve(base_dir, name)
        except _Unreadable as exc:
            issues.append(PolicyIssue(at[0], at[1], f"extends: cannot read policy file {name!r}: {exc.reason}"))
            continue
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
        index.record(own, key, index.where_of(data, key) or _top(shown))
    return _merge(merged, own, index, ())


def _top(shown: str) -> Where:
    """Where a problem of a whole document is reported: its first line (a dict has none)."""
    return (shown, 0 if shown == _DICT else 1)


def _merge(base: dict[str, Any], over: dict[str, Any], index: LineIndex, path: tuple[str, ...]) -> dict[str, Any]:
    """Field-wise merge: mappings recurse, routes merge by id, anything else is replaced."""
    out: dict[str, Any] = {}
    for source in (base, over):
        for key, value in source.items():
            where = index.where_of(source, key)
            here = (*path, key)
            if key in out and here == ("routes",) and isinstance(out[key], list) and isinstance(value, list):
                value = _merge_routes(out[key], value, index)
            elif (key in out and here == ("catalog", "deployments")
                  and isinstance(out[key], list) and isinstance(value, list)):
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


def _check_duplicate_route_ids(
    data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], default: Where
) -> None:
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
            first_line = then[1] if then else "?"
            issues.append(PolicyIssue(file, line, f"duplicate route id {rid!r} (first on line {first_line})"))
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
        issues.extend(PolicyIssue(_DICT, 0, p) for p in problems)
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
    Only regular files of at most `MAX_FILE_BYTES` are read.
    """
    return load_policy_document(source, catalog=catalog, env=env).policy


def load_policy_document(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
    env: Mapping[str, str] | None = None,
) -> LoadedPolicy:
    """`load_policy`, keeping the merged document and its lines (what `policy validate` reads)."""
    environ = os.environ if env is None else env
    index = LineIndex()
    issues: list[PolicyIssue] = []
    if isinstance(source, Mapping):
        name, base_dir = _DICT, Path.cwd()
        data = _copy_mapping(dict(source), environ, issues)
        data = _compose(data, base_dir, name, (), index, issues, environ)
    else:
        name = os.fspath(source)
        try:
            path = _resolve(Path.cwd(), name)
        except _Unreadable as exc:
            raise PolicyError([PolicyIssue(name, 0, f"cannot read policy file {name!r}: {exc.reason}")]) from None
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
    return _finish(data, index, issues, name, catalog).policy


def _finish(
    data: dict[str, Any], index: LineIndex, issues: list[PolicyIssue], name: str, catalog: Catalog | None
) -> LoadedPolicy:
    policy = build_policy(data, index, issues, source=name, catalog=catalog, default=_top(name))
    if issues or policy is None:
        unique = sorted(dict.fromkeys(issues), key=lambda i: (i.file != name, i.file, i.line))
        raise PolicyError(unique)
    return LoadedPolicy(policy, data, index)
