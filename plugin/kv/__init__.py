"""The edit-aware KV cache (positional integrity encoding).

:class:`EditSession` keeps one document's tokens and KV cache through edits
(:mod:`plugin.kv.edit_session`); :mod:`plugin.kv.rotary` reads a model's rotary
embedding and re-rotates cached keys; :mod:`plugin.kv.retokenize` keeps the token ids
equal to the tokenizer's view by re-tokenizing a window around each edit;
:class:`CachedPrefix` hands part of a cache to the decode loop without copying it;
:class:`FimSession` (:mod:`plugin.kv.fim`) keeps a fill-in-the-middle prompt in one.
"""

from plugin.kv.cache import CachedPrefix
from plugin.kv.edit_session import EditError, EditSession
from plugin.kv.fim import FimSession, fim_spelling
from plugin.kv.rotary import Rotary, RotaryUnavailable, read_rotary

__all__ = [
    "CachedPrefix",
    "EditError",
    "EditSession",
    "FimSession",
    "Rotary",
    "RotaryUnavailable",
    "fim_spelling",
    "read_rotary",
]
