"""Token Recycling (Luo et al. 2024): candidates the target already ranked, drafted again.

Every verification forward yields the target's logits after each token it read; their
top ``WIDTH`` tokens are stored in an adjacency matrix row for that token
(``[vocab, WIDTH]`` int32, 1.5 MB for a 49k vocabulary) and overwrite what was there.
A draft is a tree grown from the context's last token by looking up rows, best
candidates first, up to ``tree_width`` per node, while the predicted chance of reaching
a node (the product of acceptance rates by depth and rank along its path) stays above
the speculator's floor. The matrix
lives as long as the drafter (one per model in a process), so later generations start
with what earlier ones saw: train-free and cheap.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

import torch

from plugin.speculation.tree import DraftTree

WIDTH = 8  # candidates kept per token


class TokenRecycling:
    name = "recycling"

    def __init__(self, vocab_size: int) -> None:
        self.table = torch.full((vocab_size, WIDTH), -1, dtype=torch.int32)

    def observe(self, fed: list[int], rows: torch.Tensor) -> None:
        """Store the top candidates after each token in ``fed`` (``rows[i]`` are the
        logits the target gave after ``fed[i]``)."""
        if not fed:
            return
        top = torch.topk(rows[:, : self.table.shape[0]], WIDTH, dim=-1).indices.to(torch.int32).cpu()
        self.table[torch.tensor(fed, dtype=torch.long)] = top

    def propose(
        self,
        last: int,
        limit: int,
        width: int,
        tree: DraftTree,
        parent: int,
        rate: Callable[[int, int], float],
        floor: float,
    ) -> None:
        """Grow up to ``limit`` nodes under ``parent`` (whose token is ``last``) into
        ``tree``, best first: a candidate of rank ``r`` at depth ``d`` is reached with the
        chance its parent is times ``rate(d, r)``; candidates below ``floor`` are left out
        (a dynamic tree, as EAGLE-2 and Sequoia size theirs)."""
        if not 0 <= last < self.table.shape[0]:
            return
        heap: list[tuple[float, int, int, int, int, int]] = []
        order = 0

        def offer(node: int, token: int, depth: int, reach: float) -> None:
            nonlocal order
            for rank, cand in enumerate(self.table[token, :width].tolist()):
                chance = reach * rate(depth + 1, rank)
                if cand >= 0 and chance >= floor:
                    heapq.heappush(heap, (-chance, order, node, cand, depth + 1, rank))
                    order += 1

        offer(parent, last, 0, 1.0)
        added = 0
        while heap and added < limit:
            neg, _, node, token, depth, rank = heapq.heappop(heap)
            child = tree.add(token, node, self.name, (depth_bucket(depth), rank))
            added += 1
            offer(child, token, depth, -neg)


def depth_bucket(depth: int) -> int:
    """Depths past 6 share their acceptance statistics."""
    return min(depth, 6)
