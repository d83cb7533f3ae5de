"""Where a SARIF result points: the line that declares a registry, and a file URI code scanning can place.

Lines: one pass over a file's text indexes every registry ID, `"name"` and `"address"` value and the first
registries `type`, so locating N registries in a file of N is linear (the search it replaces scanned the whole
text once per registry: 4,000 registries took 51 s). Line numbers come from a bisect over the newline offsets.

Files: with a source root (`--source-root`, default the git root of the first input), a file inside it is a
repository-relative URI with `uriBaseId: %SRCROOT%`, which is how GitHub code scanning places a result in the
repository, whatever the working directory or the form of the path given (`../x.json`, `/abs/x.json`). A file
outside the root (or with no root known) keeps the path as given: relative stays relative, absolute becomes a
`file://` URI.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from pathlib import Path, PurePath, PurePosixPath
from typing import Any
from urllib.parse import quote

from dlp.domain.model import Registry
from dlp.ids import fold
from dlp.inputs.terraform import is_address

SRCROOT = "%SRCROOT%"
_ID = re.compile(r'"(/subscriptions/[^"\\]*)"', re.IGNORECASE)
_PAIR = re.compile(r'"(name|address)"\s*:\s*("(?:[^"\\]|\\.)*")', re.IGNORECASE)
_TYPE = re.compile(r'"type"\s*:\s*"microsoft\.containerregistry/registries"', re.IGNORECASE)


class LineIndex:
    """A file's text, indexed once: `line_of(registry)` is then a few dictionary look-ups and a bisect."""

    def __init__(self, text: str):
        self._newlines = [match.start() for match in re.finditer("\n", text)]
        self._ids: dict[str, int] = {}
        for match in _ID.finditer(text):
            if "/registries/" in match.group(1).lower():
                self._ids.setdefault(fold(match.group(1)), match.start())
        self._pairs: dict[tuple[str, str], int] = {}
        for match in _PAIR.finditer(text):
            try:
                value = json.loads(match.group(2))
            except ValueError:
                continue
            self._pairs.setdefault((match.group(1).lower(), fold(value)), match.start())
        found = _TYPE.search(text)
        self._type = found.start() if found else None

    def line(self, offset: int) -> int:
        return bisect.bisect_left(self._newlines, offset) + 1

    def offset_of(self, registry: Registry) -> int | None:
        """Its ARM ID or Terraform address, else `"name": "<name>"`, else the first registries `type`."""
        if registry.is_arm_id and fold(registry.id) in self._ids:
            return self._ids[fold(registry.id)]
        if not registry.is_arm_id and is_address(registry.id) and ("address", fold(registry.id)) in self._pairs:
            return self._pairs[("address", fold(registry.id))]
        if registry.name and not registry.name.startswith("<") and ("name", fold(registry.name)) in self._pairs:
            return self._pairs[("name", fold(registry.name))]
        return self._type

    def line_of(self, registry: Registry) -> int:
        offset = self.offset_of(registry)
        return 1 if offset is None else self.line(offset)


def git_root(path: str) -> Path | None:
    """The nearest folder at or above `path` holding `.git` (a folder, or a file in a worktree or submodule)."""
    here = Path(os.path.abspath(path or "."))
    if not here.is_dir():
        here = here.parent
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return None


def relative_uri(path: PurePath) -> str:
    return quote(PurePosixPath(*path.parts).as_posix())


def plain_uri(source: str) -> str:
    """A path as given: relative stays relative (forward slashes, percent-encoded); absolute becomes file://."""
    path = PurePath(source)
    return path.as_uri() if path.is_absolute() else relative_uri(path)


class Artifacts:
    """SARIF artifact locations for input files, relative to one source root when it is known."""

    def __init__(self, root: str | Path | None = None, cwd: str | Path | None = None):
        self.root = Path(os.path.abspath(root)) if root else None
        self.cwd = Path(os.path.abspath(cwd or os.getcwd()))
        self._known: dict[str, dict[str, Any]] = {}

    def location(self, source: str) -> dict[str, Any]:
        """The artifactLocation of a source (a copy: each result owns its own), worked out once per source."""
        if source not in self._known:
            self._known[source] = self._location(source)
        return dict(self._known[source])

    def _location(self, source: str) -> dict[str, Any]:
        if self.root is not None and source and not source.startswith("<"):
            absolute = Path(os.path.normpath(self.cwd / source))
            try:
                inside = absolute.relative_to(self.root)
            except ValueError:
                inside = None
            if inside is not None and inside.parts:
                return {"uri": relative_uri(inside), "uriBaseId": SRCROOT}
        return {"uri": plain_uri(source)}

    def base_ids(self) -> dict[str, Any]:
        """`run.originalUriBaseIds`: what %SRCROOT% stood for on the machine that wrote the log."""
        if self.root is None:
            return {}
        return {SRCROOT: {"uri": self.root.as_uri().rstrip("/") + "/"}}
