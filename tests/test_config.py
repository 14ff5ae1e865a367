from pathlib import Path

import pytest
import yaml

from latentdistill.config import (
    RunConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_overrides,
    save_config,
)
from latentdistill.errors import LatentDistillError

from helpers import REPO, one_line

CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_without_a_file():
    assert load_config() == RunConfig()


def test_yaml_then_overrides(tmp_path):
    path = write(tmp_path / "run.yaml", "seed: 3\ndata:\n  resolution: 16\n  mean: [0.5, 0.5, 0.5]\ndistill:\n  ipc: 2\n  lr: 0.5\n")
    config = load_config(path, ["distill.ipc=10", "data.skip_bad=true", "output_dir=outputs/x", "autoencoder.subfolder=vae"])
    assert config.seed == 3
    assert config.data.resolution == 16
    assert config.data.mean == [0.5, 0.5, 0.5]
    assert config.distill.ipc == 10  # the override wins over the file
    assert config.distill.lr == 0.5 and isinstance(config.distill.lr, float)
    assert config.data.skip_bad is True
    assert config.output_dir == "outputs/x"
    assert config.autoencoder.subfolder == "vae"
    # untouched keys keep their defaults
    assert config.distill.iterations == RunConfig().distill.iterations
    assert config.evaluate == RunConfig().evaluate


def test_override_values_are_yaml_scalars():
    config = load_config(None, ["distill.lr=1", "autoencoder.subfolder=null", "data.std=[0.25, 0.25, 0.25]", "cache.dir="])
    assert config.distill.lr == 1.0 and isinstance(config.distill.lr, float)
    assert config.autoencoder.subfolder is None
    assert config.data.std == [0.25, 0.25, 0.25]
    assert config.cache.dir == ""  # an empty value is the empty string (output_dir refuses it: test_hostile_input)


@pytest.mark.parametrize("text, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("+2.5e+1", 25.0), (".5", 0.5)])
def test_float_overrides_in_exponent_notation(tmp_path, text, value):
    # PyYAML reads `1e-3` (no dot) as a string; a learning rate written that way is still a number.
    assert load_config(None, [f"distill.lr={text}"]).distill.lr == pytest.approx(value)
    path = write(tmp_path / "run.yaml", f"evaluate:\n  weight_decay: {text}\n")
    assert load_config(path).evaluate.weight_decay == pytest.approx(value)


def test_parse_overrides_nests_keys():
    assert parse_overrides(["distill.ipc=10", "distill.lr=0.5", "seed=3"]) == {"distill": {"ipc": 10, "lr": 0.5}, "seed": 3}


@pytest.mark.parametrize(
    "override, key",
    [("distill.ipcc=10", "distill.ipcc"), ("dat.root=x", "dat"), ("nope=1", "nope"), ("distill.ipc.x=1", "distill.ipc")],
)
def test_unknown_override_key_names_the_dotted_key(override, key):
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    message = one_line(error)
    assert f"'{key}'" in message
    if key == "distill.ipcc":
        assert "distill.ipc" in message.replace("'distill.ipcc'", "")  # the suggestion


@pytest.mark.parametrize(
    "text, key",
    [("distill:\n  ipcc: 10\n", "distill.ipcc"), ("data:\n  skip_bad: maybe\n", "data.skip_bad")],
    ids=["unknown_key", "wrong_type"],
)
def test_bad_key_in_file_names_file_and_key(tmp_path, text, key):
    path = write(tmp_path / "run.yaml", text)
    with pytest.raises(LatentDistillError) as error:
        load_config(path)
    message = one_line(error)
    assert str(path) in message and key in message


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("distill.ipc=ten", "distill.ipc", "integer"),
        ("distill.ipc=1.5", "distill.ipc", "integer"),
        ("distill.ipc=true", "distill.ipc", "integer"),
        ("data.skip_bad=maybe", "data.skip_bad", "true or false"),
        ("data.skip_bad=1", "data.skip_bad", "true or false"),
        ("distill.lr=fast", "distill.lr", "number"),
        ("data.mean=0.5", "data.mean", "list"),
        ("data.mean=[0.5, x, 0.5]", "data.mean[1]", "number"),
        ("data=3", "data", "mapping"),
        ("output_dir=[a, b]", "output_dir", "string"),
    ],
)
def test_wrong_type_names_the_key(override, key, expected):
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    message = one_line(error)
    assert f"'{key}'" in message and expected in message


@pytest.mark.parametrize(
    "override",
    ["data.resolution=0", "data.val_per_class=-1", "cache.shard_size=0", "cache.batch_size=-4", "distill.ipc=0",
     "evaluate.runs=0", "distill.real_batch=0"],
)
def test_out_of_range_values_name_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    assert f"'{key}'" in one_line(error) and "at least" in str(error.value)
    with pytest.raises(LatentDistillError, match=key):
        config_from_dict(parse_overrides([override]))


@pytest.mark.parametrize("override", ["precision=fp16", "distill.optimizer=lbfgs"])
def test_values_outside_a_fixed_set_name_the_key(override):
    key = override.split("=")[0]
    with pytest.raises(LatentDistillError, match=f"'{key}' must be one of"):
        load_config(None, [override])


@pytest.mark.parametrize("override", ["distill.ipc", "=3", ""])
def test_override_without_equals(override):
    with pytest.raises(LatentDistillError, match="key=value") as error:
        load_config(None, [override])
    one_line(error)


def test_bad_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path / "bad.yaml", "distill:\n  ipc: 1\n  lr: [0.1\nseed: 3\n")
    with pytest.raises(LatentDistillError) as error:
        load_config(path)
    message = one_line(error)
    assert str(path) in message and "YAML" in message and "line" in message


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = write(tmp_path / "list.yaml", "- a\n- b\n")
    with pytest.raises(LatentDistillError) as error:
        load_config(path)
    assert str(path) in one_line(error)


def test_binary_config_file(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01" * 8)
    with pytest.raises(LatentDistillError) as error:
        load_config(path)
    assert str(path) in one_line(error)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(write(tmp_path / "empty.yaml", "")) == RunConfig()


@pytest.mark.parametrize("name", ["missing.yaml", "a_folder"])
def test_missing_config_file(tmp_path, name):
    (tmp_path / "a_folder").mkdir()
    with pytest.raises(LatentDistillError) as error:
        load_config(tmp_path / name)
    message = one_line(error)
    assert "not found" in message and str(tmp_path / name) in message


def test_dict_round_trip():
    config = load_config(None, ["distill.ipc=10", "autoencoder.subfolder=vae", "data.mean=[0.1, 0.2, 0.3]", "seed=7"])
    values = config_to_dict(config)
    assert values["distill"]["ipc"] == 10 and values["autoencoder"]["subfolder"] == "vae"
    assert config_from_dict(values) == config
    assert config_from_dict({}) == RunConfig()
    with pytest.raises(LatentDistillError, match="'distill.ipcc'"):
        config_from_dict({"distill": {"ipcc": 1}})


def test_save_config_round_trip(tmp_path):
    config = load_config(None, ["distill.ipc=10", "distill.lr=1e-3", "output_dir=outputs/2024-01-01", "data.skip_bad=true"])
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert isinstance(yaml.safe_load(path.read_text()), dict)
    again = load_config(path)
    assert again == config
    assert config_to_dict(again) == config_to_dict(config)
    # saving the reloaded config again writes the same text
    second = tmp_path / "again.yaml"
    save_config(again, second)
    assert second.read_text() == path.read_text()


def test_date_like_strings_stay_strings():
    # YAML reads 2024-01-01 as a date; a string key takes it as the text the user typed.
    assert load_config(None, ["output_dir=2024-01-01"]).output_dir == "2024-01-01"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(path.relative_to(REPO / "configs")) for path in CONFIGS])
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, RunConfig)
    assert config_from_dict(config_to_dict(config)) == config


def test_there_are_shipped_configs():
    assert CONFIGS, "configs/*.yaml is empty"


@pytest.mark.parametrize(("old", "new"), [("prior.steps", "prior.denoising_steps"),
                                          ("distill.syn_steps_per_checkpoint", "distill.syn_steps_per_recompute")])
def test_a_renamed_key_says_its_new_name(old, new):
    with pytest.raises(LatentDistillError, match=f"config key '{old}' was renamed to '{new}'"):
        load_config(None, [f"{old}=2"])
