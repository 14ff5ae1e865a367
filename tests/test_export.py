import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

import latentdistill.io
from latentdistill.cli import main
from latentdistill.errors import LatentDistillError
from latentdistill.export import (
    FORMAT_VERSION,
    DistilledSet,
    load_distilled,
    read_distilled,
    save_grid,
    write_distilled,
)

from helpers import CLASSES


def make_set(ipc: int = 2, size: int = 16, embeddings: bool = True) -> DistilledSet:
    generator = torch.Generator().manual_seed(0)
    n = 3 * ipc
    metadata = {
        "format_version": FORMAT_VERSION,
        "task": "classification",
        "dataset": "tinyset",
        "classes": list(CLASSES),
        "ipc": ipc,
        "autoencoder": {"kind": "taesd", "variant": "taesd", "latent_channels": 4, "scaling_factor": 1.0,
                        "name_or_path": "/somewhere", "subfolder": None},
        "config": {"seed": 0, "distill": {"lr": 0.1, "iterations": 4}},
        "seed": 0,
    }
    return DistilledSet(
        latents=torch.randn(n, 4, size // 8, size // 8, generator=generator),
        labels=torch.arange(3).repeat_interleave(ipc),
        images=torch.randint(0, 256, (n, 3, size, size), generator=generator, dtype=torch.uint8),
        embeddings=torch.randn(n, 8, generator=generator) if embeddings else None,
        metadata=metadata,
    )


def raw_tensors(distilled: DistilledSet) -> dict[str, torch.Tensor]:
    return {"latents": distilled.latents, "labels": distilled.labels, "images": distilled.images}


def raw_metadata(distilled: DistilledSet) -> dict[str, str]:
    return {key: json.dumps(value) for key, value in distilled.metadata.items()}


def test_round_trip(tmp_path):
    original = make_set()
    path = tmp_path / "set.safetensors"
    write_distilled(path, original)
    loaded = read_distilled(path)
    for name in ("latents", "labels", "images", "embeddings"):
        assert torch.equal(getattr(loaded, name), getattr(original, name)), name
    assert loaded.latents.dtype == torch.float32 and loaded.labels.dtype == torch.int64
    assert loaded.images.dtype == torch.uint8
    assert loaded.metadata == original.metadata
    assert loaded.classes == list(CLASSES) and loaded.ipc == 2

    without = make_set(embeddings=False)
    without.images = None
    write_distilled(tmp_path / "latents_only.safetensors", without)
    again = read_distilled(tmp_path / "latents_only.safetensors")
    assert again.images is None and again.embeddings is None
    assert torch.equal(again.latents, without.latents)


def test_load_distilled_is_a_dataset(tmp_path):
    original = make_set(ipc=3)
    path = tmp_path / "set.safetensors"
    write_distilled(path, original)
    dataset = load_distilled(path)
    assert isinstance(dataset, Dataset)
    assert len(dataset) == 9
    assert dataset.classes == list(CLASSES)
    image, label = dataset[4]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert label == 1 and isinstance(label, int)
    assert torch.equal(image, original.images[4].float() / 255)
    images, labels = next(iter(DataLoader(dataset, batch_size=9)))
    assert images.shape == (9, 3, 16, 16) and labels.tolist() == original.labels.tolist()

    latents_only = make_set()
    latents_only.images = None
    write_distilled(tmp_path / "latents_only.safetensors", latents_only)
    with pytest.raises(LatentDistillError, match="no decoded images"):
        load_distilled(tmp_path / "latents_only.safetensors")


def test_save_grid_has_one_row_per_class(tmp_path):
    distilled = make_set(ipc=2)
    path = tmp_path / "grid.png"
    save_grid(distilled.images, distilled.labels, path, scale=2)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        # 3 classes x (16 + 2 px border) rows, 2 images x (16 + 2) columns, upscaled twice
        assert picture.size == (2 * 18 * 2, 3 * 18 * 2)
        pixels = torch.from_numpy(np.asarray(picture.convert("RGB")).copy()).permute(2, 0, 1)
    # the second image of class 2 (row 2, column 1) lands at its cell, pixel for pixel (nearest upscaling)
    top, left = (2 * 18 + 1) * 2, (1 * 18 + 1) * 2
    assert torch.equal(pixels[:, top : top + 32 : 2, left : left + 32 : 2], distilled.images[5])
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "foreign_pt_metadata", "not_json",
                                  "format_version", "labels_out_of_range", "images_dtype", "latents_shape"])
def test_read_errors_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.safetensors"
    distilled = make_set()
    tensors, metadata = raw_tensors(distilled), raw_metadata(distilled)
    if case == "truncated":
        write_distilled(path, distilled)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "foreign":
        save_file({"weight": torch.zeros(2, 2)}, path)
    elif case == "foreign_pt_metadata":
        save_file({"weight": torch.zeros(2, 2)}, path, metadata={"format": "pt"})
    elif case == "not_json":
        save_file(tensors, path, metadata={**metadata, "classes": "a,b,c"})
    elif case == "format_version":
        save_file(tensors, path, metadata={**metadata, "format_version": json.dumps(FORMAT_VERSION + 1)})
    elif case == "labels_out_of_range":
        save_file({**tensors, "labels": torch.tensor([0, 0, 1, 1, 2, 3])}, path, metadata=metadata)
    elif case == "images_dtype":
        save_file({**tensors, "images": distilled.images.float() / 255}, path, metadata=metadata)
    elif case == "latents_shape":
        save_file({**tensors, "latents": distilled.latents.flatten(1)}, path, metadata=metadata)
    with pytest.raises(LatentDistillError) as error:
        read_distilled(path)
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    expected = {
        "missing": "not found",
        "truncated": "not a readable safetensors file",
        "foreign": "missing metadata key 'format_version'",
        "foreign_pt_metadata": "not a latentdistill file",
        "not_json": "not a latentdistill file",
        "format_version": f"format version {FORMAT_VERSION + 1}",
        "labels_out_of_range": "labels fall outside the 3 classes",
        "images_dtype": "'images' must be uint8",
        "latents_shape": "'latents' must be a float (N, C, h, w)",
    }[case]
    assert expected in message


def test_info_lists_shapes_and_metadata(tmp_path, capsys):
    path = tmp_path / "set.safetensors"
    write_distilled(path, make_set())
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"file: {path}" in out
    assert "latents: (6, 4, 2, 2) float32" in out
    assert "labels: (6,) int64" in out
    assert "images: (6, 3, 16, 16) uint8" in out
    assert "embeddings: (6, 8) float32" in out
    assert f"format_version: {FORMAT_VERSION}" in out
    assert 'classes: ["class_a", "class_b", "class_c"]' in out
    assert '"variant": "taesd"' in out

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert main(["info", str(bad)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and str(bad) in captured.err
    assert "Traceback" not in captured.err


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "set.safetensors"
    write_distilled(path, make_set())
    before = path.read_bytes()

    # Invalid tensors are refused before anything is written.
    invalid = make_set()
    invalid.labels = torch.tensor([0, 0, 1, 1, 2, 7])
    with pytest.raises(LatentDistillError, match="labels fall outside"):
        write_distilled(path, invalid)
    wrong_images = make_set()
    wrong_images.images = wrong_images.images.float()
    with pytest.raises(LatentDistillError, match="'images' must be uint8"):
        write_distilled(path, wrong_images)
    wrong_embeddings = make_set()
    wrong_embeddings.embeddings = wrong_embeddings.embeddings[:2]
    with pytest.raises(LatentDistillError, match="'embeddings' must be a float"):
        write_distilled(path, wrong_embeddings)
    assert path.read_bytes() == before

    # A write that dies half-way (disk full, killed) leaves the old file, and no temporary behind.
    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(latentdistill.io, "save_file", failing_save_file)
    replacement = make_set()
    replacement.latents = replacement.latents + 1
    with pytest.raises(OSError, match="No space left"):
        write_distilled(path, replacement)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set.safetensors"]
    assert torch.equal(read_distilled(path).latents, make_set().latents)
