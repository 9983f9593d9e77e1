"""Shared fixtures: real tokenizers, a tiny random-weight Llama, the real default model.

Tests needing ``../shared/data`` skip with a message naming the missing path (override
the location with ``STENCIL_SHARED_DATA``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("STENCIL_SHARED_DATA", REPO.parent / "shared" / "data"))
SHARED_TOKENIZERS = ["llama3-128k", "qwen2-152k", "gpt2-50k", "deepseek-coder-32k"]


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, skipping the test clearly when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"external test data not found: {path} (set STENCIL_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def default_tokenizer():
    from plugin.models import load_tokenizer

    return load_tokenizer()


@pytest.fixture(scope="session")
def default_vocab(default_tokenizer):
    from plugin.vocabulary import Vocabulary

    return Vocabulary.from_tokenizer(default_tokenizer)


@pytest.fixture(scope="session")
def tiny_model(default_tokenizer):
    """A 2-layer Llama with random weights over the real default vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(default_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        eos_token_id=default_tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = default_tokenizer.eos_token_id
    return model


@pytest.fixture(scope="session")
def default_model():
    from plugin.models import load_model

    return load_model()


@pytest.fixture(scope="session")
def sharp_tiny_model(default_tokenizer):
    """A tiny random Llama that puts real mass on refused tokens (tests/exact_distributions.py)."""
    from tests.exact_distributions import tiny_model as build

    return build(default_tokenizer)
