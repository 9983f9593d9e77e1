"""Speculative decoding under constraints: drafts the constrained target verifies.

:class:`SpeculativeConfig` says which drafters to use (:mod:`.config`); the
:class:`~plugin.speculation.speculator.Speculator` builds one draft per forward from
them (:mod:`.lookup` context lookup, :mod:`.recycling` Token Recycling trees,
:mod:`.draft_model` a smaller model, and the constraint's forced tokens) and cuts what
the constraint refuses; the decode loop (:mod:`plugin.decoding.loop`) scores the draft
in one forward (:func:`plugin.kv.cache.score`, a tree attention mask for trees) and
keeps the accepted branch of the cache.
"""

from plugin.speculation.config import AUTO_DRAFTERS, DRAFTERS, SpeculativeConfig, resolve_speculative

__all__ = ["AUTO_DRAFTERS", "DRAFTERS", "SpeculativeConfig", "resolve_speculative"]
