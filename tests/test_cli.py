import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from latentdistill.cli import main
from latentdistill.export import FORMAT_VERSION, DistilledSet, write_distilled

from helpers import CLASSES, REPO, TEST_PER_CLASS, TRAIN_PER_CLASS


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["--no-progress", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *names: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def config_file(tmp_path, tiny_folder, tiny_autoencoder_dir) -> Path:
    values = {
        "output_dir": str(tmp_path / "outputs" / "run"),
        "threads": 1,
        "data": {"root": str(tiny_folder), "resolution": 16, "val_per_class": 2},
        "autoencoder": {"name_or_path": str(tiny_autoencoder_dir)},
        "cache": {"dir": str(tmp_path / "cache"), "shard_size": 16, "batch_size": 8},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture
def bad_safetensors(tmp_path, tiny_autoencoder_dir) -> dict[str, Path]:
    """Files that `info` must refuse: truncated, not safetensors at all, and two foreign safetensors files."""
    distilled = tmp_path / "distilled.safetensors"
    write_distilled(distilled, DistilledSet(
        torch.zeros(3, 4, 2, 2), torch.tensor([0, 1, 2]), None, None,
        {"format_version": FORMAT_VERSION, "task": "classification", "classes": list(CLASSES)},
    ))  # fmt: skip
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(distilled.read_bytes()[:-7])
    text = tmp_path / "notes.safetensors"
    text.write_text("not a tensor file")
    plain = tmp_path / "plain.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, plain)
    return {
        "truncated": truncated,
        "text": text,
        "taesd_encoder": tiny_autoencoder_dir / "encoder.safetensors",  # metadata that is not JSON
        "plain": plain,  # no metadata at all
        "missing": tmp_path / "missing.safetensors",
    }


def test_info_on_a_distilled_file(tmp_path, capsys):
    path = tmp_path / "ok.safetensors"
    write_distilled(path, DistilledSet(
        torch.zeros(3, 4, 2, 2), torch.tensor([0, 1, 2]), torch.zeros(3, 3, 16, 16, dtype=torch.uint8), None,
        {"format_version": FORMAT_VERSION, "task": "classification", "classes": list(CLASSES), "ipc": 1},
    ))  # fmt: skip
    code, out, err = run_cli(capsys, "info", str(path))
    assert code == 0 and err == ""
    assert "latents: (3, 4, 2, 2) float32" in out and "images: (3, 3, 16, 16) uint8" in out
    assert '"class_a"' in out


@pytest.mark.parametrize("which", ["truncated", "text", "taesd_encoder", "plain", "missing"])
def test_info_refuses_bad_files(bad_safetensors, capsys, which):
    path = bad_safetensors[which]
    code, out, err = run_cli(capsys, "info", str(path))
    assert code == 2 and out == ""
    assert_one_line_error(err, path)


def test_info_in_a_subprocess(bad_safetensors):
    path = bad_safetensors["truncated"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "latentdistill", "info", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert_one_line_error(result.stderr, path)


@pytest.mark.parametrize(
    "override, key",
    [("distill.ipcc=10", "distill.ipcc"), ("distill.ipc=ten", "distill.ipc"), ("data.skip_bad=maybe", "data.skip_bad"), ("distill.ipc", "distill.ipc")],
)
def test_bad_override_exits_2_naming_the_key(config_file, capsys, override, key):
    code, out, err = run_cli(capsys, "encode", "--config", str(config_file), override)
    assert code == 2
    assert_one_line_error(err, f"'{key}'")
    assert not (config_file.parent / "cache").exists()  # refused before anything was written


def test_unknown_key_in_config_file(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("distill:\n  ipcc: 3\n")
    code, _, err = run_cli(capsys, "encode", "--config", str(path))
    assert code == 2
    assert_one_line_error(err, path, "distill.ipcc")


def test_missing_or_broken_config_file(tmp_path, capsys):
    code, _, err = run_cli(capsys, "encode", "--config", str(tmp_path / "nope.yaml"))
    assert code == 2
    assert_one_line_error(err, tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [unclosed\n")
    code, _, err = run_cli(capsys, "encode", "--config", str(broken))
    assert code == 2
    assert_one_line_error(err, broken)


def test_encode_builds_the_caches_then_reuses_them(config_file, tmp_path, capsys, snapshot):
    code, out, err = run_cli(capsys, "encode", "--config", str(config_file))
    assert code == 0, err
    cache = tmp_path / "cache"
    assert f"({len(CLASSES) * TRAIN_PER_CLASS} train images)" in out
    assert f"({len(CLASSES) * TEST_PER_CLASS} test images)" in out
    train_meta = json.loads((cache / "train" / "meta.json").read_text())
    test_meta = json.loads((cache / "test" / "meta.json").read_text())
    assert train_meta["complete"] and train_meta["autoencoder"]["latent_channels"] == 4 and train_meta["resolution"] == 16
    assert test_meta["complete"] and test_meta["autoencoder"] is None
    assert not (tmp_path / "outputs").exists()  # encode writes the cache only

    before = snapshot(cache)
    code, out, err = run_cli(capsys, "encode", "--config", str(config_file))
    assert code == 0, err
    assert snapshot(cache) == before

    # Another resolution is refused, naming the cache folder and the key, and the cache is left alone.
    code, out, err = run_cli(capsys, "encode", "--config", str(config_file), "data.resolution=24")
    assert code == 2
    assert_one_line_error(err, cache / "train", "resolution=")
    assert snapshot(cache) == before


def test_encode_with_too_few_images_for_validation(config_file, capsys):
    code, _, err = run_cli(capsys, "encode", "--config", str(config_file), f"data.val_per_class={TRAIN_PER_CLASS}")
    assert code == 2
    assert_one_line_error(err, "data.val_per_class")


def test_encode_missing_dataset_or_autoencoder(config_file, tmp_path, capsys):
    code, _, err = run_cli(capsys, "encode", "--config", str(config_file), f"data.root={tmp_path / 'nowhere'}")
    assert code == 2
    assert_one_line_error(err, tmp_path / "nowhere")
    assert "'data.root'" in err
    code, _, err = run_cli(capsys, "encode", "--config", str(config_file), f"autoencoder.name_or_path={tmp_path / 'no_weights'}")
    assert code == 2
    assert_one_line_error(err, tmp_path / "no_weights")


def test_encode_with_a_corrupt_image(config_file, tiny_folder, tmp_path, capsys):
    bad = tiny_folder / "train" / "class_b" / "005.png"
    bad.write_bytes(os.urandom(64))
    code, out, err = run_cli(capsys, "encode", "--config", str(config_file))
    assert code == 2
    assert_one_line_error(err, bad)

    code, out, err = run_cli(capsys, "encode", "--config", str(config_file), "--skip-bad")
    assert code == 0, err
    assert "skipped 1 unreadable images" in out
    assert f"({len(CLASSES) * TRAIN_PER_CLASS - 1} train images)" in out
    meta = json.loads((tmp_path / "cache" / "train" / "meta.json").read_text())
    assert [entry[0] for entry in meta["skipped"]] == [str(bad)]
    assert bad.exists()  # the bad file itself is left where it is
