"""Stencil: constrained decoding for PyTorch + Hugging Face transformers.

Public API: :func:`load_model` (and :func:`tune_linears` for a model loaded elsewhere),
:func:`constrained_generate`, :class:`Generation`,
:class:`StencilLogitsProcessor`, :class:`EditSession` and :class:`FimSession` (the
edit-aware KV cache, :mod:`plugin.kv`), the :class:`Matcher` seam, :class:`Vocabulary`,
and the :class:`StencilError` hierarchy.
"""

from plugin.api import Generation, constrained_generate
from plugin.errors import (
    ConstraintViolation,
    GrammarError,
    ModelLoadError,
    OptionError,
    PromptError,
    RegexError,
    SchemaError,
    StencilError,
    UnsupportedSchemaError,
    VocabularyError,
)
from plugin.kv import EditError, EditSession, FimSession
from plugin.linear_kernels import tune_linears
from plugin.logits_processor import StencilLogitsProcessor
from plugin.matcher import CompiledConstraint, Matcher
from plugin.models import load_model, load_tokenizer
from plugin.vocabulary import Vocabulary

__all__ = [
    "CompiledConstraint",
    "ConstraintViolation",
    "EditError",
    "EditSession",
    "FimSession",
    "Generation",
    "GrammarError",
    "Matcher",
    "ModelLoadError",
    "OptionError",
    "PromptError",
    "RegexError",
    "SchemaError",
    "StencilError",
    "StencilLogitsProcessor",
    "UnsupportedSchemaError",
    "Vocabulary",
    "VocabularyError",
    "constrained_generate",
    "load_model",
    "load_tokenizer",
    "tune_linears",
]
