"""How long the regex of a JSON Schema will be, estimated before outlines-core builds it.

outlines-core's builder spells an object's optional properties as every "first present
property, then any later ones" alternative, so the regex grows with the square of their
number and multiplies through nesting. A schema like an audit-log format (hundreds of
optional properties, each a ``$ref``) makes the builder allocate gigabytes and abort the
whole process. The estimate follows the builder's shapes closely enough to refuse such a
schema first, with an error naming where it grows, instead of crashing or hanging.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LEAF = 60  # a string, number or literal's regex, about
REF_DEPTH = 3  # recursive references are followed this deep (the builder unrolls them)
MAX_VISITS = 200_000  # subschemas visited (references re-walk their targets)


def estimate(schema: Any, root: Any, resolve: Any) -> tuple[int, str]:
    """``(characters, pointer of the largest object)`` for ``schema``; ``resolve(ref)``
    returns the target of a local ``$ref``."""
    worst = {"size": 0, "at": ""}
    visits = [0]

    def size(node: Any, at: str, refs: tuple[str, ...]) -> int:
        visits[0] += 1
        if visits[0] > MAX_VISITS:  # references fanning out: the regex would be as large
            raise _TooLarge(at)
        if not isinstance(node, Mapping):
            return LEAF
        total = 0
        ref = node.get("$ref")
        if isinstance(ref, str):
            if refs.count(ref) >= REF_DEPTH:
                return LEAF
            try:
                target = resolve(ref)
            except Exception:
                return LEAF
            total += size(target, ref[1:], (*refs, ref))
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            branches = node.get(key)
            if isinstance(branches, list):
                total += sum(size(b, f"{at}/{key}/{i}", refs) for i, b in enumerate(branches))
        items = node.get("items")
        if isinstance(items, Mapping):
            total += 2 * size(items, f"{at}/items", refs)
        props = node.get("properties")
        if isinstance(props, Mapping) and props:
            required = set(node.get("required") or [])
            parts = [len(k) + size(v, f"{at}/properties/{k}", refs) for k, v in props.items()]
            optional = sum(1 for k in props if k not in required)
            # each optional property opens an alternative repeating the ones after it
            here = sum(parts) * max(1, optional)
            if here > worst["size"]:
                worst.update(size=here, at=at)
            total += here
        extra = node.get("additionalProperties")
        if isinstance(extra, Mapping) and not props:
            total += 2 * size(extra, f"{at}/additionalProperties", refs)
        enum = node.get("enum")
        if isinstance(enum, list):
            total += sum(len(str(v)) + 4 for v in enum)
        return max(total, LEAF)

    try:
        return size(schema, "", ()), worst["at"]
    except _TooLarge as exc:
        return 10**18, exc.args[0]


class _TooLarge(Exception):
    """The walk itself grew past MAX_VISITS nodes."""
