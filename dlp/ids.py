"""Comparing Azure resource IDs the way ARM does: case-insensitive for A-Z only.

Resource-group names may hold Unicode letters, and `str.lower()` / `casefold()` map some of
them onto ASCII: "\u212a" (KELVIN SIGN) lower-cases to "k", "\u017f" (LONG S) case-folds to
"s". ARM keeps such names apart from their ASCII look-alikes (it compares ordinally, ignoring
case only for the invariant mappings, which do not send non-ASCII letters to ASCII), so a
resource group `sandbox-\u212a` is not `sandbox-k`. If the responder folded the whole string,
anyone who can create a resource group could borrow another scope's exemption, or step into a
scope that is not theirs. So every ID comparison here folds A-Z <-> a-z and nothing else.

A *near miss* (the IDs differ under that folding but agree once Unicode case folding and
compatibility forms are applied) is almost always deliberate: the caller gets to know
(`lookalike_of`), and the pipeline records and alerts it.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterable

_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# What Unicode-aware folding still leaves apart but a reader (or a Turkish-locale fold) would not:
# dotless i, and the combining dot "İ".lower() leaves behind.
_LOOSE_EXTRA = str.maketrans({"\u0131": "i", "\u0307": None})


# A resource-group name as ARM accepts it: 1-90 letters (Unicode allowed), digits, underscores, hyphens, periods and
# parentheses, not ending in a period. The last rule matters beyond style: "." or ".." would be a dot segment that the
# HTTP layer folds away, so the request would address another resource than the ID that was checked.
RESOURCE_GROUP = r"[-\w\.\(\)]{0,89}[-\w\(\)]"


def fold(text: str) -> str:
    """`text` with A-Z lower-cased and every other character kept as it is."""
    return text.translate(_ASCII_LOWER)


def key(resource_id: str) -> str:
    """The identity of an ARM ID: trailing slashes dropped, ASCII-folded."""
    return fold(resource_id.rstrip("/"))


def within(resource_id: str, scope: str) -> bool:
    """The ID is `scope` or lies beneath it (ASCII-only case folding)."""
    resource, parent = key(resource_id), key(scope)
    return resource == parent or resource.startswith(parent + "/")


def _loose(text: str) -> str:
    """A fold that maps look-alikes together: compatibility forms (fullwidth, Kelvin sign), case folding
    (long s), dotless i. Only for *detecting* near misses, never for deciding a match."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold()).translate(_LOOSE_EXTRA)


def lookalike(resource_id: str, scope: str) -> bool:
    """The ID would be `scope` or beneath it under Unicode folding, but is not under ASCII folding."""
    if within(resource_id, scope):
        return False
    resource, parent = _loose(resource_id.rstrip("/")), _loose(scope.rstrip("/"))
    return resource == parent or resource.startswith(parent + "/")


def lookalike_of(resource_id: str, scopes: Iterable[str]) -> str | None:
    """The first of `scopes` the ID only looks like it belongs to; None when there is none."""
    return next((scope for scope in scopes if lookalike(resource_id, scope)), None)


def odd_characters(text: str) -> str:
    """The non-ASCII characters of `text`, named, for a message a person can act on."""
    seen = dict.fromkeys(ch for ch in text if not ch.isascii())
    return ", ".join(f"U+{ord(ch):04X} {unicodedata.name(ch, 'unnamed')}" for ch in seen)


MAX_RESOURCE_ID = 1024     # longer than any ARM ID; longer input is refused unread
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# Case-insensitive, but ASCII-only outside the resource-group name (which may hold Unicode letters): under
# re.IGNORECASE alone, "\u212a" (Kelvin sign), "\u017f" (long s) and "\u0131" (dotless i) match k, s and i.
_REGISTRY_OR_CHILD = re.compile(
    rf"^(?P<registry>(?a:/subscriptions/{_GUID}/resourceGroups/){RESOURCE_GROUP}(?a:/providers/"
    r"Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50}))"
    r"(?P<child>(?a:/[A-Za-z]+)/[^/]{1,260}(?:(?a:/[A-Za-z]+)/[^/]{1,260})*)?/?$",
    re.IGNORECASE,
)


_RESOURCE_GROUP_ID = re.compile(rf"^(?a:/subscriptions/{_GUID}/resourceGroups/){RESOURCE_GROUP}$", re.IGNORECASE)


def resource_group_of(resource_id: object) -> str | None:
    """The resource-group ID itself (no trailing slash, no child), or None when it is not exactly one."""
    if not isinstance(resource_id, str) or len(resource_id) > MAX_RESOURCE_ID:
        return None
    text = resource_id.strip().rstrip("/")
    return text if _RESOURCE_GROUP_ID.match(text) else None


def registry_of(resource_id: str) -> tuple[str, bool] | None:
    """(parent registry ID, is the registry itself) for a registry or any of its children."""
    if not isinstance(resource_id, str) or len(resource_id) > MAX_RESOURCE_ID:
        return None
    match = _REGISTRY_OR_CHILD.match(resource_id.strip())
    if not match:
        return None
    return match.group("registry"), match.group("child") is None
