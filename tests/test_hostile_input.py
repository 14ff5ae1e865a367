"""Hostile input: values and files that are well-formed but mean nothing (NaN, a negative learning rate,
labels of the wrong type, metadata of the wrong shape) are refused at the edge, in one line that names
the config key or the file, instead of running into NaN results or a traceback later."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import pytest
import torch
from safetensors.torch import save_file

from latentdistill.config import RunConfig, config_from_dict, load_config, parse_overrides
from latentdistill.errors import LatentDistillError
from latentdistill.export import FORMAT_VERSION, DistilledSet, describe_distilled, read_distilled, write_distilled

from helpers import CLASSES, one_line

# --- config ----------------------------------------------------------------------------------------

FLOAT_KEYS = ["distill.lr", "distill.inner_lr", "distill.embedding_lr", "distill.syn_lr", "distill.momentum",
              "evaluate.weight_decay", "prior.guidance_scale", "augment.rotate", "sr.budget", "train_prior.ema_decay",
              "sr.lr", "evaluate.lr"]  # number keys that also take a word


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "1e999"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_floats_are_refused(key, value):
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [f"{key}={value}"])
    message = one_line(error)
    assert f"'{key}'" in message and "finite" in message


@pytest.mark.parametrize("override, key", [("data.mean=[0.5, .nan, 0.5]", "data.mean[1]"),
                                           ("data.std=[0.2, 0.2, .inf]", "data.std[2]")])
def test_non_finite_list_items_are_refused(override, key):
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    message = one_line(error)
    assert f"'{key}'" in message and "finite" in message


def test_integer_too_large_for_a_float_is_refused():
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [f"distill.lr={10 ** 400}"])
    assert "'distill.lr'" in one_line(error)


@pytest.mark.parametrize(
    "override, key, expected",
    [
        *[(f"{key}={value}", key, "greater than 0") for key in
          ("distill.lr", "distill.inner_lr", "distill.syn_lr", "distill.syn_lr_lr", "buffer.lr", "evaluate.lr", "sr.lr",
           "train_prior.lr") for value in (0, -1)],
        ("distill.embedding_lr=-0.5", "distill.embedding_lr", "at least 0"),
        ("sr.iterations=fast", "sr.iterations", "one of protocol"),
        ("sr.protocol=slow", "sr.protocol", "quick | espcn-converged | converged"),
        ("distill.matching_nets=trained", "distill.matching_nets", "fresh | experts"),
        ("distill.momentum=-5", "distill.momentum", "at least 0"),
        ("distill.momentum=1", "distill.momentum", "less than 1"),
        ("buffer.momentum=1.5", "buffer.momentum", "less than 1"),
        ("evaluate.momentum=-0.1", "evaluate.momentum", "at least 0"),
        ("buffer.weight_decay=-1", "buffer.weight_decay", "at least 0"),
        ("evaluate.weight_decay=-1e-4", "evaluate.weight_decay", "at least 0"),
        ("train_prior.weight_decay=-1", "train_prior.weight_decay", "at least 0"),
        ("data.std=[0, 0, 0]", "data.std[0]", "greater than 0"),
        ("data.std=[0.2, -0.2, 0.2]", "data.std[1]", "greater than 0"),
        ("data.std=[0.2, 0.2]", "data.std", "list of 3"),
        ("data.mean=[0.5, 0.5, 0.5, 0.5]", "data.mean", "list of 3"),
        ("data.std=[a, b, c]", "data.std[0]", "number"),
        ("data.mean=[[0.5], 0.5, 0.5]", "data.mean[0]", "number"),
        ("sr.budget=0", "sr.budget", "greater than 0"),
        ("sr.budget=1.5", "sr.budget", "at most 1"),
        ("sr.pool=0", "sr.pool", "greater than 0"),
        ("sr.pool=2", "sr.pool", "at most 1"),
        ("sr.prune_drop=1", "sr.prune_drop", "less than 1"),
        ("sr.prune_drop=-0.1", "sr.prune_drop", "at least 0"),
        ("train_prior.ema_decay=1", "train_prior.ema_decay", "less than 1"),
        ("train_prior.class_dropout=1", "train_prior.class_dropout", "less than 1"),
        ("train_prior.class_dropout=-0.5", "train_prior.class_dropout", "at least 0"),
        ("output_dir=", "output_dir", "empty"),
        ("output_dir='   '", "output_dir", "empty"),
        ("device=", "device", "empty"),
        ("device=null", "device", "string"),
        ("data.resolution=4", "data.resolution", "at least 8"),
        ("data.resolution=100000", "data.resolution", "at most 4096"),
        ("sr.scale=5", "sr.scale", "one of 2 | 3 | 4"),
    ],
)
def test_impossible_values_name_the_key(override, key, expected):
    with pytest.raises(LatentDistillError) as error:
        load_config(None, [override])
    message = one_line(error)
    assert f"'{key}'" in message and expected in message
    # the same check holds for a dict (a run's saved config) as for an override
    with pytest.raises(LatentDistillError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict(parse_overrides([override]))


@pytest.mark.parametrize("override", ["distill.embedding_lr=0", "distill.momentum=0", "buffer.momentum=0.99",
                                      "sr.budget=1", "sr.pool=1", "sr.prune_drop=0", "train_prior.ema_decay=0",
                                      "data.resolution=8", "data.resolution=4096", "evaluate.weight_decay=0",
                                      "output_dir=x", "device=cpu", "distill.lr=1e-8"])
def test_values_at_the_edges_are_accepted(override):
    load_config(None, [override])


def test_nan_in_a_yaml_file_names_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("distill:\n  ipc: 1\n  lr: .nan\n")
    with pytest.raises(LatentDistillError) as error:
        load_config(path)
    message = one_line(error)
    assert str(path) in message and "'distill.lr'" in message and "finite" in message


def test_defaults_pass_their_own_checks():
    assert load_config() == RunConfig()


# --- distilled files -------------------------------------------------------------------------------


def valid_set(n_per_class: int = 2) -> DistilledSet:
    generator = torch.Generator().manual_seed(0)
    n = len(CLASSES) * n_per_class
    return DistilledSet(
        latents=torch.randn(n, 4, 2, 2, generator=generator),
        labels=torch.arange(len(CLASSES)).repeat_interleave(n_per_class),
        images=torch.randint(0, 256, (n, 3, 16, 16), generator=generator, dtype=torch.uint8),
        embeddings=torch.randn(n, 8, generator=generator),
        metadata={"format_version": FORMAT_VERSION, "task": "classification", "classes": list(CLASSES),
                  "dataset": "tinyset", "ipc": n_per_class, "seed": 0,
                  "autoencoder": {"kind": "taesd", "latent_channels": 4}, "config": {"seed": 0}},
    )


def save_raw(path, tensors: dict, metadata: dict) -> None:
    """Write a file by hand, past ``write_distilled``'s checks, as another tool (or a corrupted run) would."""
    save_file({k: v.contiguous() for k, v in tensors.items() if v is not None},
              path, metadata={key: json.dumps(value) for key, value in metadata.items()})


def bad_file(path, case: str) -> None:
    distilled = valid_set()
    n = len(distilled.labels)
    tensors = {"latents": distilled.latents, "labels": distilled.labels, "images": distilled.images,
               "embeddings": distilled.embeddings}
    metadata = dict(distilled.metadata)
    nan_latents = distilled.latents.clone()
    nan_latents[1, 2, 0, 1] = float("nan")
    inf_embeddings = distilled.embeddings.clone()
    inf_embeddings[0, 0] = float("inf")
    changes = {
        "labels_float": {"labels": distilled.labels.float()},
        "labels_bool": {"labels": distilled.labels.bool()},
        "labels_int8": {"labels": distilled.labels.to(torch.int8)},
        "labels_int16": {"labels": distilled.labels.to(torch.int16)},
        "labels_uint8": {"labels": distilled.labels.to(torch.uint8)},
        "labels_2d": {"labels": distilled.labels[:, None]},
        "images_3d": {"images": distilled.images[0]},
        "images_channels": {"images": distilled.images[:, :1]},
        "images_count": {"images": distilled.images[:2]},
        "images_float": {"images": distilled.images.float()},
        "images_int16": {"images": distilled.images.to(torch.int16)},
        "images_empty": {"images": torch.zeros(n, 3, 0, 16, dtype=torch.uint8)},
        "no_images": {"latents": torch.zeros(0, 4, 2, 2), "labels": torch.zeros(0, dtype=torch.long),
                      "images": torch.zeros(0, 3, 16, 16, dtype=torch.uint8), "embeddings": None},
        "latents_empty_channels": {"latents": torch.zeros(n, 0, 2, 2)},
        "latents_nan": {"latents": nan_latents},
        "latents_int": {"latents": distilled.latents.to(torch.int32)},
        "embeddings_inf": {"embeddings": inf_embeddings},
    }
    metadata_changes = {
        "classes_dict": {"classes": {"0": "a"}},
        "classes_number": {"classes": 3},
        "classes_string": {"classes": "class_a,class_b,class_c"},
        "classes_mixed": {"classes": ["class_a", 1, "class_c"]},
        "format_version_string": {"format_version": str(FORMAT_VERSION)},
        "format_version_float": {"format_version": float(FORMAT_VERSION)},
        "format_version_bool": {"format_version": True},
        "task_list": {"task": ["classification"]},
        "task_null": {"task": None},
        "config_list": {"config": [1, 2]},
        "autoencoder_string": {"autoencoder": "taesd"},
        "ipc_string": {"ipc": "2"},
    }
    tensors.update(changes.get(case, {}))
    metadata.update(metadata_changes.get(case, {}))
    save_raw(path, tensors, metadata)


READ_ERRORS = {
    "labels_float": "'labels' must be an int64 (6,) tensor, one per latent, got float32 (6,)",
    "labels_bool": "got bool (6,)",
    "labels_int8": "got int8 (6,)",
    "labels_int16": "got int16 (6,)",
    "labels_uint8": "got uint8 (6,)",
    "labels_2d": "got int64 (6, 1)",
    "images_3d": "'images' must be uint8 (6, 3, H, W) with H, W > 0, got uint8 (3, 16, 16)",
    "images_channels": "got uint8 (6, 1, 16, 16)",
    "images_count": "got uint8 (2, 3, 16, 16)",
    "images_float": "got float32 (6, 3, 16, 16)",
    "images_int16": "got int16 (6, 3, 16, 16)",
    "images_empty": "got uint8 (6, 3, 0, 16)",
    "no_images": "holds no images",
    "latents_empty_channels": "'latents' must be a float (N, C, h, w) tensor with no empty dimension, got float32 (6, 0, 2, 2)",
    "latents_nan": "'latents' holds non-finite values",
    "latents_int": "'latents' must be a float (N, C, h, w) tensor, got int32 (6, 4, 2, 2)",
    "embeddings_inf": "'embeddings' holds non-finite values",
    "classes_dict": "metadata key 'classes' must be a list of class names (strings), got {\"0\": \"a\"}",
    "classes_number": "metadata key 'classes' must be a list of class names (strings), got 3",
    "classes_string": "metadata key 'classes' must be a list of class names (strings)",
    "classes_mixed": "metadata key 'classes' must be a list of class names (strings)",
    "format_version_string": "metadata key 'format_version' must be an integer, got \"1\"",
    "format_version_float": "metadata key 'format_version' must be an integer, got 1.0",
    "format_version_bool": "metadata key 'format_version' must be an integer, got true",
    "task_list": "metadata key 'task' must be a string",
    "task_null": "metadata key 'task' must be a string, got null",
    "config_list": "metadata key 'config' must be a JSON object",
    "autoencoder_string": "metadata key 'autoencoder' must be a JSON object",
    "ipc_string": "metadata key 'ipc' must be an integer",
}


@pytest.mark.parametrize("case", sorted(READ_ERRORS))
def test_hostile_distilled_files_are_refused_in_one_line(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    bad_file(path, case)
    with pytest.raises(LatentDistillError) as error:
        read_distilled(path)
    message = one_line(error)
    assert str(path) in message and READ_ERRORS[case] in message
    # `info` reads through the same checks: the same one line, never a traceback
    with pytest.raises(LatentDistillError, match="^" + str(path).replace("\\", "\\\\")):
        describe_distilled(path)


def test_a_directory_is_not_a_distilled_file(tmp_path):
    with pytest.raises(LatentDistillError) as error:
        read_distilled(tmp_path)
    message = one_line(error)
    assert str(tmp_path) in message and "is a directory, not a distilled file" in message


def test_int32_labels_and_float64_latents_are_read_as_written_types(tmp_path):
    # The types write_distilled writes, from a file another tool wrote with their wider or narrower twins.
    distilled = valid_set()
    path = tmp_path / "wide.safetensors"
    save_raw(path, {"latents": distilled.latents.double(), "labels": distilled.labels.int(), "images": distilled.images,
                    "embeddings": distilled.embeddings.half()}, distilled.metadata)
    loaded = read_distilled(path)
    assert loaded.latents.dtype == torch.float32 and loaded.labels.dtype == torch.int64
    assert loaded.embeddings.dtype == torch.float32
    assert torch.equal(loaded.labels, distilled.labels)
    assert torch.allclose(loaded.latents, distilled.latents)


def test_float64_latents_that_overflow_float32_are_refused(tmp_path):
    distilled = valid_set()
    latents = distilled.latents.double()
    latents[0, 0, 0, 0] = 1e300
    path = tmp_path / "overflow.safetensors"
    save_raw(path, {"latents": latents, "labels": distilled.labels}, distilled.metadata)
    with pytest.raises(LatentDistillError) as error:
        read_distilled(path)
    assert "'latents' holds non-finite values" in one_line(error)


@pytest.mark.parametrize("name", ["latents", "embeddings"])
def test_write_refuses_non_finite_tensors(tmp_path, name):
    path = tmp_path / "distilled.safetensors"
    distilled = valid_set()
    getattr(distilled, name).view(-1)[3] = float("nan")
    with pytest.raises(LatentDistillError) as error:
        write_distilled(path, distilled)
    message = one_line(error)
    assert str(path) in message and f"'{name}' holds non-finite values" in message
    assert not path.exists() and not list(tmp_path.iterdir())  # a diverged run exports nothing


@pytest.mark.parametrize("case, expected", [
    ("classes", "metadata key 'classes' must be a list of class names"),
    ("missing_task", "metadata key 'task' is missing"),
    ("int8_labels", "got int8 (6,)"),
])
def test_write_refuses_what_read_would_refuse(tmp_path, case, expected):
    path = tmp_path / "distilled.safetensors"
    distilled = valid_set()
    if case == "classes":
        distilled.metadata["classes"] = {"a": 0}
    elif case == "missing_task":
        del distilled.metadata["task"]
    elif case == "int8_labels":
        distilled.labels = distilled.labels.to(torch.int8)
    with pytest.raises(LatentDistillError) as error:
        write_distilled(path, distilled)
    assert expected in one_line(error)
    assert not path.exists()


def test_describe_distilled(tmp_path):
    path = tmp_path / "set.safetensors"
    distilled = valid_set()
    distilled.metadata["config"] = {"long": "x" * 500}
    distilled.metadata["sr_dataset"] = ["yang91", "bsd200"]
    write_distilled(path, distilled)
    text = describe_distilled(path)
    lines = text.splitlines()
    assert lines[:6] == [
        f"file: {path}",
        "tensors:",
        "  latents: (6, 4, 2, 2) float32",
        "  labels: (6,) int64",
        "  images: (6, 3, 16, 16) uint8",
        "  embeddings: (6, 8) float32",
    ]
    # what the set stores per class: fp32 latents (64 bytes) and embeddings (32) for 2 images of each class
    assert lines[6] == "storage: 192 bytes per class (latents, embeddings), 0.25 uint8 images of 768 bytes"
    # the metadata in a fixed order (safetensors returns it in hash order): the required keys, then sorted
    assert lines[7:] == [
        "metadata:",
        f"  format_version: {FORMAT_VERSION}",
        '  task: "classification"',
        '  classes: ["class_a", "class_b", "class_c"]',
        '  autoencoder: {"kind": "taesd", "latent_channels": 4}',
        '  config: {"long": "' + "x" * 190 + " ...",
        '  dataset: "tinyset"',
        "  ipc: 2",
        "  seed: 0",
        '  sr_dataset: ["yang91", "bsd200"]',
    ]
    assert all(describe_distilled(str(path)) == text for _ in range(5))  # the same text on every read


def test_describe_distilled_on_odd_but_valid_metadata(tmp_path):
    # Unknown keys hold any JSON (NaN included); a key with a line break stays on one line.
    distilled = valid_set()
    path = tmp_path / "odd.safetensors"
    save_raw(path, {"latents": distilled.latents, "labels": distilled.labels},
             {**distilled.metadata, "note\nsecond line": "x", "score": float("nan"), "nested": {"a": [None, True]}})
    lines = describe_distilled(path).splitlines()
    assert '  "note\\nsecond line": "x"' in lines
    assert "  score: NaN" in lines
    assert '  nested: {"a": [null, true]}' in lines
    assert not any(line.startswith("  images:") for line in lines)
