"""Grammar-aligned sampling: ASAp (Park et al. 2024, "Grammar-Aligned Decoding").

Masked decoding samples token ``t`` after prefix ``w`` with probability
``P(t|w) / A(w)`` over the allowed tokens, where ``A(w)`` is the model's mass on them.
That is not the model's distribution conditioned on the grammar, ``P(x | x ∈ L)``: the
right factor for ``t`` is its *expected future grammaticality* ``EFG(w t)``, the chance
that the unconstrained model, continuing ``w t``, ends in the language. ASAp learns EFG
from its own samples:

* a trie over the sampled token prefixes holds, for each visited prefix ``w``, the
  allowed mass ``A(w)`` and, for each expanded child, ``P(t|w)`` and ``EFG(w t)``;
* tokens are drawn from ``P(t|w) · EFG(w t)`` renormalised over the allowed tokens, with
  ``EFG = 1`` for a child never expanded (an upper bound) and ``0`` for a refused token;
* after each sample, EFG is recomputed bottom-up along its path:
  ``EFG(w) = A(w) − Σ_children P(t|w) · (1 − EFG(w t))`` (exact once every child is
  expanded), and ``EFG = 1`` after end-of-sequence (the string is in the language).

So the first sample is a masked-decoding sample, and repeated sampling for the same
(model, prompt, constraint) converges to ``P(x | x ∈ L)``. Only a few floats are kept
per visited prefix. The trie can be saved and loaded (JSON).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from plugin.samplers.sampling import SamplingParams


@dataclass
class TrieNode:
    """A sampled prefix: its allowed mass and its expanded children ``token -> (P, node)``."""

    allowed_mass: float = 1.0
    efg: float = 1.0
    complete: bool = False  # reached by end-of-sequence: in the language, EFG = 1
    kids: dict[int, tuple[float, TrieNode]] = field(default_factory=dict)


class ASApTrie:
    """The EFG estimates for one (model, prompt, constraint, temperature)."""

    def __init__(self) -> None:
        self.root = TrieNode()
        self.samples = 0

    def weights(self, node: TrieNode, probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sampling weights at ``node``: ``P(t|w) · EFG(w t)`` over the allowed tokens.

        Also records ``A(w)``, which only depends on the prefix.
        """
        w = torch.where(mask, probs, torch.zeros_like(probs))
        node.allowed_mass = float(w.sum())
        if node.kids:
            ids = torch.tensor(list(node.kids), device=w.device)
            efg = torch.tensor([kid.efg for _, kid in node.kids.values()], dtype=w.dtype, device=w.device)
            w[ids] = w[ids] * efg
        return w

    def sample(
        self,
        node: TrieNode,
        logits: torch.Tensor,
        mask: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> tuple[int, TrieNode]:
        """Draw the next token at ``node`` (argmax when greedy); return it and its child."""
        probs = torch.softmax(logits / (params.temperature or 1.0), dim=-1)
        w = self.weights(node, probs, mask)
        if params.greedy:
            token = int(torch.argmax(w))
        else:
            token = int(torch.multinomial(w / w.sum(), 1, generator=generator))
        return token, self.step(node, token, float(probs[token]))

    def step(self, node: TrieNode, token: int, p: float) -> TrieNode:
        """The child of ``node`` for ``token`` (created on first use)."""
        hit = node.kids.get(token)
        if hit is None:
            hit = node.kids[token] = (p, TrieNode())
        return hit[1]

    def update(self, path: list[TrieNode], complete: bool) -> None:
        """Recompute EFG along a finished sample's path (root first, last node last)."""
        self.samples += 1
        if complete:
            path[-1].complete = True
            path[-1].efg = 1.0
        for node in reversed(path[:-1] if complete else path):
            if node.complete:
                continue
            lost = sum(p * (1.0 - kid.efg) for p, kid in node.kids.values())
            node.efg = max(0.0, node.allowed_mass - lost)

    # --- persistence -----------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"samples": self.samples, "root": _dump(self.root)}))

    @classmethod
    def load(cls, path: str | Path) -> ASApTrie:
        data = json.loads(Path(path).read_text())
        trie = cls()
        trie.samples = int(data["samples"])
        trie.root = _undump(data["root"])
        return trie


def _dump(node: TrieNode) -> dict[str, Any]:
    return {
        "a": node.allowed_mass,
        "e": node.efg,
        "c": node.complete,
        "k": {str(t): [p, _dump(kid)] for t, (p, kid) in node.kids.items()},
    }


def _undump(data: dict[str, Any]) -> TrieNode:
    node = TrieNode(float(data["a"]), float(data["e"]), bool(data["c"]))
    node.kids = {int(t): (float(p), _undump(kid)) for t, (p, kid) in data["k"].items()}
    return node


_TRIES: dict[tuple[Any, ...], ASApTrie] = {}


def trie_for(key: tuple[Any, ...]) -> ASApTrie:
    """The process-wide trie for ``key`` (model, prompt ids, constraint, temperature)."""
    trie = _TRIES.get(key)
    if trie is None:
        trie = _TRIES[key] = ASApTrie()
    return trie
