"""Recipe schema: defaults, overrides with type coercion, unknown keys with suggestions."""
import pytest
import yaml

from goodfit.errors import UserError
from goodfit.recipe import Recipe, apply_overrides, builtin_recipes, load_recipe, parse_override

REQUIRED_BUILTINS = {"digits-cnn", "digits-mlp", "mnist1d-cnn", "breast-cancer-mlp", "wine-mlp", "diabetes-mlp"}


def test_every_core_key_has_a_default():
    r = Recipe()
    assert r.data.split.val == 0.15 and r.data.split.test == 0.15 and r.data.split.stratify
    assert r.model.norm == "batch" and r.model.norm_position == "before_activation"
    assert r.train.early_stopping.patience == 5 and r.train.early_stopping.restore_best
    assert r.data.perturb.label_noise == 0.0 and r.data.perturb.subset is None
    assert r.doctor.enabled and not r.doctor.auto_repair


def test_builtins_exist_and_validate():
    assert REQUIRED_BUILTINS <= set(builtin_recipes())
    for name in builtin_recipes():
        assert load_recipe(name).name == name


def test_default_recipe_is_digits_cnn():
    assert load_recipe(None).name == "digits-cnn"


@pytest.mark.parametrize("item,key,value", [
    ("optimizer.lr=0.01", ["optimizer", "lr"], 0.01),
    ("train.batch_size=128", ["train", "batch_size"], 128),
    ("data.split.stratify=false", ["data", "split", "stratify"], False),
    ("data.perturb.subset=null", ["data", "perturb", "subset"], None),
    ("model.init=normal(std=0.02)", ["model", "init"], "normal(std=0.02)"),
    ("data.augment=[hflip, {noise: 0.05}]", ["data", "augment"], ["hflip", {"noise": 0.05}]),
])
def test_override_parsing_coerces_types(item, key, value):
    assert parse_override(item) == (key, value)


def test_overrides_apply_and_validate():
    r = load_recipe("digits-mlp", ["optimizer.lr=0.01", "train.grad_clip={norm: 1.0}", "model.width=7"])
    assert r.optimizer.lr == 0.01 and r.train.grad_clip.norm == 1.0 and r.model.width == 7


def test_patch_dict_is_the_same_as_set():
    base = load_recipe("digits-mlp").to_dict()
    assert apply_overrides(base, {"optimizer.lr": 0.5})["optimizer"]["lr"] == 0.5


def test_resolved_recipe_round_trips_through_yaml():
    r = load_recipe("wine-mlp", ["seed=3"])
    assert load_recipe(yaml.safe_load(r.to_yaml())) == r


@pytest.mark.parametrize("overrides,expect", [
    (["optimizer.lrr=0.1"], "did you mean 'optimizer.lr'"),
    (["trian.epochs=3"], "did you mean 'train'"),
    (["data.perturb.label_nosie=0.2"], "did you mean 'data.perturb.label_noise'"),
])
def test_unknown_key_suggests(overrides, expect):
    with pytest.raises(UserError) as e:
        load_recipe("digits-cnn", overrides)
    assert "unknown key" in e.value.message and expect in e.value.hint


@pytest.mark.parametrize("overrides,key", [
    (["train.batch_size=abc"], "train.batch_size"),
    (["optimizer.lr=-1"], "optimizer.lr"),
    (["data.normalize=zscore"], "data.normalize"),
    (["data.split.val=0.5", "data.split.test=0.5"], "data.split"),
    (["name=../../etc"], "name"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(UserError) as e:
        load_recipe("digits-cnn", overrides)
    assert f"'{key}'" in e.value.message


def test_unknown_recipe_name_suggests_builtin():
    with pytest.raises(UserError) as e:
        load_recipe("digits-cnnn")
    assert "digits-cnn" in e.value.hint


def test_missing_yaml_file(tmp_path):
    with pytest.raises(UserError) as e:
        load_recipe(str(tmp_path / "nope.yaml"))
    assert "does not exist" in e.value.message


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(UserError):
        load_recipe(str(p))


def test_set_without_equals():
    with pytest.raises(UserError):
        parse_override("optimizer.lr")
