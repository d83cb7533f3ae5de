"""Vendor the subset of Azure's resource type schemas that infra/ uses (tests/azure_types/types.json).

Source: the generated `types.json` files of https://github.com/Azure/bicep-types-az (what the Bicep compiler
itself type-checks against). For every `type@apiVersion` declared in infra/**/*.bicep this keeps the resource's
body schema and every type reachable from it, without descriptions, in a compact form:

    {"source": {...}, "resources": {"Microsoft.Web/sites@2024-04-01": <type index>}, "types": [<node>, ...]}

    node: "any" | "scalar" | {"enum": [...], "open": bool} | {"items": i}
          | {"props": {name: [i, flags]}, "extra": i | null}
          | {"disc": "name", "base": {name: [i, flags]}, "cases": {value: i}}

flags as in bicep-types: 1 required, 2 read-only, 4 write-only, 8 deploy-time constant.
Run it again (with a clone of bicep-types-az) after adding a resource type or changing an API version:

    python tests/azure_types/vendor.py /path/to/bicep-types-az
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("types.json")
DECLARATION = re.compile(r"^resource \w+ '([^'@]+)@([^']+)'", re.MULTILINE)


def used_types() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for path in (ROOT / "infra").rglob("*.bicep"):
        found.update(DECLARATION.findall(path.read_text(encoding="utf-8")))
    return found


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def main(repo: Path) -> None:
    git_dir = ["--git-dir", str(repo)] if (repo / "HEAD").is_file() and not (repo / ".git").exists() else []
    commit = git(repo, *git_dir, "rev-parse", "HEAD").strip()
    listing = git(repo, *git_dir, "ls-tree", "-r", "--name-only", "HEAD", "generated").split()
    types: list[object] = []
    resources: dict[str, int] = {}
    files: dict[str, str] = {}
    missing = []
    for type_name, version in sorted(used_types()):
        provider = type_name.split("/")[0].lower()
        candidates = [p for p in listing if p.endswith(f"/{provider}/{version}/types.json")]
        key = f"{type_name}@{version}"
        for path in candidates:
            table = json.loads(git(repo, *git_dir, "show", f"HEAD:{path}"))
            entry = next((t for t in table if t.get("$type") == "ResourceType" and t["name"].lower() == key.lower()), None)
            if entry is None:
                continue
            memo: dict[int, int] = {}
            resources[key] = convert(table, ref(entry["body"]), memo, types)
            files[key] = path
            break
        else:
            missing.append(key)
    if missing:
        sys.exit(f"not in bicep-types-az {commit}: {missing}")
    OUT.write_text(json.dumps({
        "source": {"repository": "https://github.com/Azure/bicep-types-az", "commit": commit, "files": files,
                   "regenerate": "python tests/azure_types/vendor.py <clone of Azure/bicep-types-az>"},
        "resources": resources, "types": types}, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(resources)} resource types, {len(types)} nodes, {OUT.stat().st_size} bytes")


def ref(obj: dict) -> int:
    return int(obj["$ref"].split("/")[-1])


def convert(table: list, index: int, memo: dict[int, int], out: list) -> int:
    if index in memo:
        return memo[index]
    slot = len(out)
    memo[index] = slot
    out.append(None)
    node = table[index]
    kind = node["$type"]

    def props(properties: dict) -> dict:
        return {name: [convert(table, ref(p["type"]), memo, out), p.get("flags", 0)] for name, p in properties.items()}

    if kind == "ObjectType":
        extra = node.get("additionalProperties")
        result: object = {"props": props(node.get("properties", {})),
                          "extra": convert(table, ref(extra), memo, out) if extra else None}
    elif kind == "DiscriminatedObjectType":
        result = {"disc": node["discriminator"], "base": props(node.get("baseProperties", {})),
                  "cases": {value: convert(table, ref(r), memo, out) for value, r in node["elements"].items()}}
    elif kind == "ArrayType":
        result = {"items": convert(table, ref(node["itemType"]), memo, out)}
    elif kind == "StringLiteralType":
        result = {"enum": [node["value"]], "open": False}
    elif kind == "UnionType":
        values, open_ = [], False
        for element in node["elements"]:
            member = table[ref(element)]
            if member["$type"] == "StringLiteralType":
                values.append(member["value"])
            else:
                open_ = True
        result = {"enum": values, "open": open_}
    elif kind == "AnyType":
        result = "any"
    else:  # StringType, IntegerType, BooleanType, ...
        result = "scalar"
    out[slot] = result
    return slot


if __name__ == "__main__":
    main(Path(sys.argv[1]))
