"""Loaders: public benchmark files → canonical frames (see `training.dataset`).

Each loader takes the source paths and `LoadOptions` and returns `{split: frame}`; the split is
`"train"`/`"test"` where the source has splits, otherwise `"all"`. Frames are validated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from training.loaders.common import LoadOptions
from training.loaders.llmrouter import load_llmrouter
from training.loaders.long import load_long
from training.loaders.mmlu_pro import load_mmlu_pro
from training.loaders.routellm import load_routellm
from training.loaders.routerbench import load_routerbench
from training.loaders.zeroeval import load_zeroeval

__all__ = ["LOADERS", "LoadOptions", "Loader"]

Loader = Callable[[Sequence[Path], LoadOptions], dict[str, Any]]

LOADERS: dict[str, Loader] = {
    "llmrouter": load_llmrouter,
    "routellm": load_routellm,
    "routerbench": load_routerbench,
    "long": load_long,
    "mmlu-pro": load_mmlu_pro,
    "zeroeval": load_zeroeval,
}
