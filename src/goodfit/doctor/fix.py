"""`goodfit doctor RUN --fix`: the run's recipe with the diagnosis's prescriptions applied."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from goodfit.recipe import apply_overrides, resolve_source, validate


def write_fixed_recipe(run_dir: str | Path, diagnosis, output: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Apply the first prescription of every warning/error (`Diagnosis.recipe_patch`) to RUN_DIR/recipe.yaml;
    write it to `output` (default RUN_DIR/recipe.fixed.yaml). Returns (path, the patch applied)."""
    run_dir = Path(run_dir)
    patch = diagnosis.recipe_patch()
    target = Path(output) if output is not None else run_dir / "recipe.fixed.yaml"
    if not patch:
        return target, patch
    doc = apply_overrides(resolve_source(run_dir / "recipe.yaml"), patch)
    validate(doc, origin=str(target))
    target.write_text("# recipe.yaml with the doctor's prescriptions applied: "
                      + ", ".join(f"{k}={v}" for k, v in patch.items()) + "\n" + yaml.safe_dump(doc, sort_keys=False))
    return target, patch
