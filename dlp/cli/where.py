"""Which registries a command that reads Azure looks at: `-s/--subscription`, `-g/--resource-group` and `--scope`,
taken the way `az` takes them, by every such command (`scan`, `exposure`, `replay`).

- `--scope ID` (repeatable, or comma-separated): a subscription, resource-group or registry ID;
- `-s/--subscription ID` (repeatable, or comma-separated): a subscription ID (a GUID);
- `-g/--resource-group NAME`: a resource-group name, in each `-s` subscription, or, without `-s`, in every
  subscription you can read (then it cannot be combined with `--scope`: name the subscription with `-s`).

They add up: `--scope A -s B` reads A and B. None at all: every subscription the identity can read.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dlp.ids import RESOURCE_GROUP, fold, within

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_GROUP = re.compile(rf"^{RESOURCE_GROUP}$")
_SCOPE = re.compile(rf"^/subscriptions/[0-9a-fA-F-]{{36}}(/resourceGroups/{RESOURCE_GROUP}"
                    r"(/providers/Microsoft\.ContainerRegistry/registries/[a-zA-Z0-9]{5,50})?)?/?$", re.IGNORECASE)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The three options, with the same names, help and meaning on every command that reads Azure."""
    group = parser.add_argument_group("which registries (as az takes them; none: every subscription you can read)")
    group.add_argument("--scope", action="append", default=[], metavar="ID",
                       help="a subscription, resource-group or registry ID (repeatable)")
    group.add_argument("-s", "--subscription", action="append", default=[], metavar="ID",
                       help="a subscription ID (repeatable)")
    group.add_argument("-g", "--resource-group", metavar="NAME",
                       help="a resource-group name: in each --subscription, or in every subscription without one")


@dataclass(frozen=True)
class Where:
    """Registry scopes (IDs), or one resource-group name in every subscription; neither: everything readable."""

    scopes: tuple[str, ...] = ()
    group: str = ""

    @property
    def everything(self) -> bool:
        return not self.scopes and not self.group

    def contains(self, registry_id: str) -> bool:
        if self.group:
            parts = registry_id.split("/")
            return len(parts) > 4 and fold(parts[3]) == "resourcegroups" and fold(parts[4]) == fold(self.group)
        return not self.scopes or any(within(registry_id, scope) for scope in self.scopes)

    def listing(self) -> Any:
        """What the sweep's engine lists (dlp.responder.sweep.Listing)."""
        from dlp.responder.sweep import Listing

        if self.group:
            return Listing((), (self.group,), ())
        return Listing.of_scopes(self.scopes) if self.scopes else Listing()

    def narrow(self, scopes: Sequence[str]) -> tuple[str, ...]:
        """DLP_SCOPES-style scopes narrowed to this selection (the intersection: a registry must be in both).
        Scopes nest, so two of them meet in the deeper one, or not at all. Needs `scopes` (not a group name)."""
        if not self.scopes:
            return tuple(scopes)
        if not scopes:
            return tuple(fold(s) for s in self.scopes)
        met = []
        for mine in self.scopes:
            for theirs in scopes:
                if within(mine, theirs):
                    met.append(fold(mine))
                elif within(theirs, mine):
                    met.append(fold(theirs))
        return tuple(dict.fromkeys(met))


def _values(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def where_of(args: argparse.Namespace) -> Where:
    """The options -> a Where; ValueError names the bad value or combination."""
    scopes = []
    for scope in _values(args.scope):
        if not _SCOPE.match(scope):
            raise ValueError(f"--scope {scope!r} is not a subscription, resource-group or registry ID")
        scopes.append(scope.rstrip("/"))
    subscriptions = []
    for subscription in _values(args.subscription):
        if not _GUID.match(subscription):
            raise ValueError(f"--subscription {subscription!r} is not a subscription ID (a GUID)")
        subscriptions.append(subscription.lower())
    group = args.resource_group
    if group is not None and not _GROUP.match(group):
        raise ValueError(f"--resource-group {group!r} is not a resource-group name")
    if group and subscriptions:
        scopes += [f"/subscriptions/{s}/resourceGroups/{group}" for s in subscriptions]
    elif subscriptions:
        scopes += [f"/subscriptions/{s}" for s in subscriptions]
    elif group:
        if scopes:
            raise ValueError("--resource-group without --subscription means that name in every subscription; it "
                             "cannot be combined with --scope: name the subscription with -s")
        return Where(group=group)
    return Where(tuple(dict.fromkeys(scopes)))
