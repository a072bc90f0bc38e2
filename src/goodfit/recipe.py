"""The recipe: one validated YAML document that says everything about a run (DESIGN §1.3).

Every key has a default, unknown keys are errors with a "did you mean" hint, and
`--set a.b=value` overrides any key with YAML type coercion. Nothing here imports torch.
"""
from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from goodfit.errors import UserError

RECIPES_DIR = Path(__file__).parent / "recipes"
DEFAULT_RECIPE = "digits-cnn"
_TASKS = ("classification", "binary", "multilabel", "regression", "segmentation", "detection")


class _Section(BaseModel):
    # inf/nan are never a sensible setting (lr: .inf would only diverge later)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class Split(_Section):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    stratify: bool = True

    @model_validator(mode="after")
    def _fractions_leave_room_for_training(self) -> "Split":
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves no training data; it must be < 1")
        return self


class Perturb(_Section):
    subset: int | None = Field(None, ge=1)
    label_noise: float = Field(0.0, ge=0.0, le=1.0)
    feature_scale: float | None = Field(None, gt=0.0)
    imbalance: float | None = Field(None, gt=0.0, le=1.0)


class Data(_Section):
    source: str = "digits"
    target: str | None = None
    split: Split = Field(default_factory=Split)
    normalize: Literal["standard", "minmax", "none"] = "standard"
    impute: Literal["none", "mean", "median", "most_frequent"] = "none"
    augment: list[str | dict[str, Any]] = Field(default_factory=list)
    balance: Literal["none", "sampler", "class_weights"] = "none"
    perturb: Perturb = Field(default_factory=Perturb)


class Model(_Section):
    name: str = "cnn"
    width: int = Field(64, ge=1)
    depth: int = Field(3, ge=0)
    activation: str = "relu"
    norm: Literal["batch", "layer", "instance", "group", "none"] = "batch"
    norm_position: Literal["before_activation", "after_activation"] = "before_activation"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    dropout_kind: Literal["standard", "spatial", "alpha"] = "standard"  # units | whole channels | SELU-preserving
    drop_path: float = Field(0.0, ge=0.0, lt=1.0)  # stochastic depth: the last residual block's drop rate
    residual: Literal["pre", "post"] = "pre"  # residual block order: pre-activation | original (post-activation)
    init: str = "default"  # goodfit.nn.init spec: default | he | xavier | orthogonal | lsuv | zeros | normal(std=…) …
    kernel_size: int = Field(3, ge=1)


class Loss(_Section):
    """`name` plus that loss's own options (e.g. {name: focal, gamma: 2.0}), checked by the loss registry."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str | None = None  # None: the task's default (cross_entropy, bce_with_logits, mse)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)

    def options(self) -> dict[str, Any]:
        """The options to pass to the loss (label_smoothing only when set)."""
        extra = dict(self.model_extra or {})
        return {**extra, "label_smoothing": self.label_smoothing} if self.label_smoothing else extra


class Optimizer(_Section):
    name: Literal["adamw", "adam", "sgd", "rmsprop", "adagrad", "nadam", "radam"] = "adamw"
    lr: float = Field(0.003, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    decay_norm_and_bias: bool = False
    # discriminative LRs: {glob: multiplier}, matched against each parameter's dotted name and its
    # prefixes ('body' and 'body.*' both match 'body.0.weight'); first match wins, unmatched x1
    lr_multipliers: dict[str, float] = Field(default_factory=dict)
    layer_decay: float | None = Field(None, gt=0.0, le=1.0)  # last top-level child x1, each earlier one x decay more

    @field_validator("lr_multipliers")
    @classmethod
    def _positive_multipliers(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: m for k, m in v.items() if not (m > 0 and m != float("inf"))}
        if bad:
            raise ValueError(f"LR multipliers must be finite and > 0, got {bad}")
        if any(not k.strip() for k in v):
            raise ValueError("an empty pattern matches no parameter")
        return v


class Schedule(_Section):
    """`name` plus that schedule's own options (e.g. {name: step, step_size: 500, gamma: 0.5}),
    checked by the schedule registry; step counts are optimizer steps, or epochs with
    `interval: epoch`. reduce_on_plateau takes factor, patience, threshold, threshold_mode,
    cooldown, eps, monitor (default val_loss) and mode (auto | min | max); its multiplier, updated
    after each epoch's validation, multiplies the warmup ramp (a cut during warmup scales the ramp).
    one_cycle cycles momentum (cycle_momentum: true, base_momentum, max_momentum) as torch's OneCycleLR."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = "cosine"
    warmup: float = Field(0.0, ge=0.0)  # linear warmup length in epochs (fractions allowed with interval: step)
    min_lr: float = Field(0.0, ge=0.0, le=1.0)  # floor / end point, as a fraction of optimizer.lr
    interval: Literal["step", "epoch"] = "step"  # epoch: one value per epoch, as a torch scheduler stepped per epoch

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Regularization(_Section):
    l1: float = Field(0.0, ge=0.0)
    l2: float = Field(0.0, ge=0.0)


class EarlyStopping(_Section):
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    patience: int | None = Field(5, ge=1)  # None disables early stopping
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class GradClip(_Section):
    norm: float | None = Field(None, gt=0.0)
    value: float | None = Field(None, gt=0.0)
    agc: float | None = Field(None, gt=0.0)  # adaptive gradient clipping λ (Brock et al. 2021), unit-wise
    auto: float | None = Field(None, ge=0.0, le=100.0)  # AutoClip percentile (Seetharaman et al. 2020)
    history: int | None = Field(None, ge=1)  # AutoClip: keep only the last N norms (None: all)

    @model_validator(mode="after")
    def _one_method(self) -> "GradClip":
        if sum(v is not None for v in (self.norm, self.value, self.agc, self.auto)) != 1:
            raise ValueError("give exactly one of {norm: X}, {value: X}, {agc: λ} or {auto: percentile}")
        if self.history is not None and self.auto is None:
            raise ValueError("history applies to {auto: percentile} only")
        return self


class Train(_Section):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    accumulate: int = Field(1, ge=1)  # micro-batches of batch_size per optimizer step
    eval_batch_size: int = Field(1024, ge=1)
    grad_clip: GradClip | None = None
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str = "auto"
    log_every: int = Field(50, ge=1)  # steps between `step` events in metrics.jsonl
    checkpoint_every: int | None = Field(None, ge=1)  # steps between mid-epoch `last` checkpoints
    checkpoint_interval: float = Field(10.0, ge=0.0)  # min seconds between epoch-end checkpoints (0: every epoch)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None leaves torch's default
    deterministic: bool = False  # bit-identical GPU runs too, at some speed (goodfit.engine.determinism)

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return v


class Doctor(_Section):
    enabled: bool = True
    auto_repair: bool = False  # repair in flight: roll back a divergence, clip exploding gradients, lower the LR on a plateau
    every: int = Field(100, ge=1)  # optimizer steps between the doctor's sampled measurements (after steps 1, 10, 25)


class Recipe(_Section):
    name: str = "digits-cnn"
    seed: int = Field(0, ge=0, lt=2**63)  # what torch.manual_seed accepts
    task: Literal[_TASKS] = "classification"  # type: ignore[valid-type]
    data: Data = Field(default_factory=Data)
    model: Model = Field(default_factory=Model)
    loss: Loss = Field(default_factory=Loss)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    schedule: Schedule = Field(default_factory=Schedule)
    regularization: Regularization = Field(default_factory=Regularization)
    train: Train = Field(default_factory=Train)
    metrics: list[str] | None = None  # None: the task's defaults
    doctor: Doctor = Field(default_factory=Doctor)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # the name becomes a folder under --out: keep it one plain path component
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", v) or ".." in v:
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names the run's folder)")
        return v

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------- loading and overrides

def builtin_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def describe_builtins() -> list[tuple[str, str]]:
    """(name, one-line description) of each built-in recipe, from its leading comment."""
    out = []
    for name, path in builtin_recipes().items():
        first = path.read_text().splitlines()[0] if path.stat().st_size else ""
        out.append((name, first.lstrip("# ").strip()))
    return out


_MAX_VALUES = 100_000  # values in a recipe once YAML anchors are expanded: more is an alias bomb or a cycle


def _check_plain(doc: Any, origin: str) -> None:
    """A recipe is plain data: YAML's safe loader still builds dates, bytes and sets, and through
    anchors/aliases huge or self-referencing graphs; refuse those before anything walks them."""
    stack, count = [doc], 0
    while stack:
        node = stack.pop()
        count += 1
        if count > _MAX_VALUES:
            raise UserError(f"{origin} is too large or refers to itself (over {_MAX_VALUES:,} values once its YAML "
                            "aliases are expanded)", "write the recipe out without nested or recursive aliases")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif not (node is None or isinstance(node, (str, int, float, bool))):
            raise UserError(f"{origin}: a value of type {type(node).__name__} ({str(node)[:40]!r}) has no place in a recipe",
                            "recipes hold strings, numbers, booleans, lists and mappings; quote it to make it a string")


def _safe_load(text: str) -> Any:
    """yaml.safe_load (no python/* tags, nothing executed), its failures as one exception type."""
    try:
        return yaml.safe_load(text)
    except (ValueError, TypeError, OverflowError, RecursionError) as e:  # e.g. a timestamp 2020-13-45, deep nesting
        raise yaml.YAMLError(f"{type(e).__name__}: {e}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot read recipe {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"recipe {path} is not UTF-8 text ({e.reason} at byte {e.start})",
                        "a recipe is a YAML text file") from None
    try:
        doc = _safe_load(text)
    except yaml.YAMLError as e:
        raise UserError(f"recipe {path} is not valid YAML: {e}", "check indentation and quoting") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UserError(f"recipe {path} must be a mapping of keys, got {type(doc).__name__}")
    _check_plain(doc, f"recipe {path}")
    return doc


def resolve_source(recipe: str | Path | None) -> dict[str, Any]:
    """A recipe argument (None, built-in name, or YAML path) -> its raw mapping."""
    if recipe is None:
        recipe = DEFAULT_RECIPE
    builtins = builtin_recipes()
    if isinstance(recipe, str) and recipe in builtins:
        return _read_yaml(builtins[recipe])
    path = Path(recipe)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise UserError(f"recipe file {path} does not exist", "give a YAML path or one of: " + ", ".join(builtins))
        return _read_yaml(path)
    close = difflib.get_close_matches(str(recipe), list(builtins), n=1)
    hint = f"did you mean '{close[0]}'?" if close else "built-in recipes: " + ", ".join(builtins)
    raise UserError(f"unknown recipe '{recipe}': not a built-in name nor a YAML file", hint)


def parse_override(item: str) -> tuple[list[str], Any]:
    """'a.b=value' -> (['a', 'b'], value), the value parsed as YAML ('0.1' -> 0.1, 'null' -> None)."""
    if "=" not in item:
        raise UserError(f"--set {item!r} is not KEY=VALUE", "e.g. --set optimizer.lr=0.001")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise UserError(f"--set key {key!r} is not a dotted recipe key", "e.g. --set train.batch_size=128")
    try:
        value = _safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if not (value is None or isinstance(value, (str, int, float, bool, list, dict))):
        value = raw  # a date, bytes or a set from YAML: the user meant the text
    _check_plain(value, f"--set {key.strip()}")
    return parts, value


def apply_overrides(doc: dict[str, Any], overrides: list[str] | dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `doc` with each override set; a recipe_patch dict works the same way."""
    import copy

    doc = copy.deepcopy(doc)
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(s) for s in overrides)
    for key, value in items:
        parts = key.split(".") if isinstance(key, str) else key
        node = doc
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"--set {'.'.join(parts)}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return doc


def _fields_at(loc: tuple) -> list[str]:
    """Field names of the schema section at a validation-error location."""
    model: Any = Recipe
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _explain(err: ValidationError, origin: str) -> UserError:
    e = err.errors()[0]
    loc = tuple(e["loc"])
    key = ".".join(str(p) for p in loc)
    if e["type"] == "extra_forbidden":
        fields = _fields_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join([*map(str, loc[:-1]), close[0]])}'?" if close else (
            "valid keys here: " + ", ".join(fields) if fields else None)
        return UserError(f"{origin}: unknown key '{key}'", hint)
    got = e.get("input")
    got_s = repr(got) if not isinstance(got, dict) else "a mapping"
    return UserError(f"{origin}: bad value for '{key}': {e['msg']} (got {got_s})",
                     "see `goodfit recipes` and README's recipe reference for each key's type")


def validate(doc: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(doc)
    except ValidationError as err:
        raise _explain(err, origin) from None


def load_recipe(recipe: str | Path | dict | Recipe | None = None, overrides: list[str] | dict | None = None) -> Recipe:
    """Built-in name, YAML path, mapping or Recipe, plus `--set` overrides -> a validated Recipe."""
    if isinstance(recipe, Recipe):
        doc = recipe.to_dict()
    elif isinstance(recipe, dict):
        doc = recipe
    else:
        doc = resolve_source(recipe)
    if overrides:
        doc = apply_overrides(doc, overrides)
    return validate(doc)


def write_patched_recipe(recipe: str | Path | None, overrides: list[str] | dict | None, patch: dict[str, Any],
                         path: str | Path, note: str) -> Path:
    """Write the recipe's own document (built-in name or YAML path), with its `--set` overrides and then
    `patch` (more `--set` overrides) applied, to `path` under a one-line comment; validated first.
    What lr-find --apply, batch-size --apply and doctor --fix write."""
    doc = apply_overrides(apply_overrides(resolve_source(recipe), overrides or []), patch)
    path = Path(path)
    validate(doc, origin=str(path))
    try:
        path.write_text(f"# {note}\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    return path
