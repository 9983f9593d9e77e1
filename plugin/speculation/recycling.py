"""Token Recycling (Luo et al. 2024): candidates the target already ranked, drafted again.

Every verification forward yields the target's logits after each token it read; their
top ``WIDTH`` tokens are stored in an adjacency matrix row for that token
(``[vocab, WIDTH]`` int32, 1.5 MB for a 49k vocabulary) and overwrite what was there.
A draft is a tree grown from the context's last token by looking up rows: the first
levels branch ``tree_width`` ways, deeper ones follow the best candidate. The matrix
lives as long as the drafter (one per model in a process), so later generations start
with what earlier ones saw: train-free and cheap.
"""

from __future__ import annotations

import torch

from plugin.speculation.tree import DraftTree

WIDTH = 8  # candidates kept per token
BRANCHING_DEPTH = 2  # levels that branch; deeper levels are chains


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

    def propose(self, last: int, limit: int, width: int, tree: DraftTree, parent: int) -> None:
        """Grow up to ``limit`` nodes under ``parent`` (whose token is ``last``) into ``tree``."""
        if not 0 <= last < self.table.shape[0]:
            return
        frontier = [(parent, last, 0)]
        added = 0
        while frontier and added < limit:
            grown = []
            for node, token, depth in frontier:
                fan = width if depth < BRANCHING_DEPTH else 1
                for cand in self.table[token, :fan].tolist():
                    if cand < 0 or added >= limit:
                        break
                    grown.append((tree.add(cand, node, self.name), cand, depth + 1))
                    added += 1
            frontier = grown
