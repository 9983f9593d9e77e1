"""What a benchmark's JSON records about the run: machine, versions, model, threads.

One place, so every results file names the same facts the same way (the model benches
recorded them each in its own copy of this dict).
"""

from __future__ import annotations

import os
import platform
from typing import Any

import torch


def model_run_meta(benchmark: str, model: Any, device: Any) -> dict[str, Any]:
    """The facts of a run of ``benchmark`` with ``model`` on ``device``."""
    import transformers

    return {
        "benchmark": benchmark,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model": getattr(model.config, "_name_or_path", None),
        "linear_routes": plan.to_json() if (plan := getattr(model, "_stencil_linear_plan", None)) else None,
    }
