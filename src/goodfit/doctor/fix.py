"""`goodfit doctor RUN --fix`: the run's recipe with the diagnosis's prescriptions applied."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from goodfit.recipe import write_patched_recipe


def write_fixed_recipe(run_dir: str | Path, diagnosis, output: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Apply the first prescription of every warning/error (`Diagnosis.recipe_patch`) to RUN_DIR/recipe.yaml;
    write it to `output` (default RUN_DIR/recipe.fixed.yaml). Returns (path, the patch applied)."""
    run_dir = Path(run_dir)
    patch = diagnosis.recipe_patch()
    target = Path(output) if output is not None else run_dir / "recipe.fixed.yaml"
    if not patch:
        return target, patch
    write_patched_recipe(run_dir / "recipe.yaml", None, patch, target,
                         "recipe.yaml with the doctor's prescriptions applied: "
                         + ", ".join(f"{k}={v}" for k, v in patch.items()))
    return target, patch
