"""A draft: tokens proposed after the context, as a chain or a tree.

``parents[i]`` is the index of the node before node ``i`` (-1: the context's last
token). A chain has ``parents[i] == i - 1``. Every node records the drafter that
proposed it and the feature its acceptance is predicted by (for example its depth and
rank), so acceptance is counted per drafter and per feature.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DraftTree:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    features: list[tuple[int, ...]] = field(default_factory=list)

    def add(self, token: int, parent: int, source: str, feature: tuple[int, ...] = ()) -> int:
        """Append a node under ``parent``; its index (the existing node's when
        ``parent`` already has a child with this token: siblings are distinct)."""
        for i, p in enumerate(self.parents):
            if p == parent and self.tokens[i] == token:
                return i
        self.tokens.append(token)
        self.parents.append(parent)
        self.sources.append(source)
        self.features.append(feature)
        return len(self.tokens) - 1

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` nodes (a chain's prefix: no kept node has a dropped parent)."""
        del self.tokens[n:], self.parents[n:], self.sources[n:], self.features[n:]

    def __len__(self) -> int:
        return len(self.tokens)

    def children(self, parent: int) -> dict[int, int]:
        """Token → node index of ``parent``'s children."""
        return {self.tokens[i]: i for i, p in enumerate(self.parents) if p == parent}

    def is_chain(self) -> bool:
        return all(p == i - 1 for i, p in enumerate(self.parents))

    def depth(self, node: int) -> int:
        """1 for a child of the root."""
        depth = 0
        while node >= 0:
            node, depth = self.parents[node], depth + 1
        return depth

    def tip(self) -> int:
        """The last node of the chain the nodes form so far (-1 when empty)."""
        return len(self.tokens) - 1
