"""The decode loop: one model forward per step (or per forced run), a sampler, a matcher.

See :mod:`plugin.decoding.loop`. The KV cache it reads may come from an
:class:`plugin.kv.EditSession` (the editor path), so the loop never assumes it starts empty.
"""

from plugin.decoding.loop import (
    FINISH_CANCELLED,
    FINISH_DEAD_END,
    FINISH_LENGTH,
    FINISH_STOP,
    DecodeResult,
    decode,
    percentile,
    stop_token_ids,
)

__all__ = [
    "FINISH_CANCELLED",
    "FINISH_DEAD_END",
    "FINISH_LENGTH",
    "FINISH_STOP",
    "DecodeResult",
    "decode",
    "percentile",
    "stop_token_ids",
]
