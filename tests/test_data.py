import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from latentdistill.autoencoders import TinyAutoencoderFamily, load_autoencoder
from latentdistill.data import (
    ImageFolder,
    LatentCache,
    encode_dataset,
    latent_cache,
    load_image,
    load_images,
    split_train_validation,
)
from latentdistill.errors import LatentDistillError

from helpers import CLASSES, TEST_PER_CLASS, TRAIN_PER_CLASS, one_line
from helpers import RESOLUTION as R


def corrupt(path: Path, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 200, dtype=np.uint8).tobytes())
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def autoencoder(tiny_autoencoder_dir):
    return load_autoencoder(str(tiny_autoencoder_dir))


def shard_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("shard-*.safetensors"))


# ---------------------------------------------------------------------------------------------- scan


def test_scan_sorts_classes_and_labels_files(tiny_folder):
    (tiny_folder / "train" / ".hidden").mkdir()
    (tiny_folder / "train" / "class_a" / "notes.txt").write_text("not an image")
    folder = ImageFolder.scan(tiny_folder, "train")
    assert folder.classes == CLASSES
    assert len(folder) == len(CLASSES) * TRAIN_PER_CLASS
    assert folder.labels == tuple(label for label in range(len(CLASSES)) for _ in range(TRAIN_PER_CLASS))
    for path, label in zip(folder.files, folder.labels):
        assert path.parent.name == CLASSES[label] and path.suffix == ".png"
    assert list(folder.files) == sorted(folder.files)
    test = ImageFolder.scan(tiny_folder, "test", classes=folder.classes)
    assert len(test) == len(CLASSES) * TEST_PER_CLASS


def test_fingerprint_changes_when_files_change(tiny_folder):
    before = ImageFolder.scan(tiny_folder, "train").fingerprint()
    assert ImageFolder.scan(tiny_folder, "train").fingerprint() == before
    (tiny_folder / "train" / "class_b" / "000.png").unlink()
    assert ImageFolder.scan(tiny_folder, "train").fingerprint() != before


def test_missing_root(tmp_path):
    with pytest.raises(LatentDistillError) as error:
        ImageFolder.scan(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in one_line(error)


def test_missing_split_names_it_and_lists_found(tiny_folder):
    with pytest.raises(LatentDistillError) as error:
        ImageFolder.scan(tiny_folder, "val")
    message = one_line(error)
    assert "'val'" in message and str(tiny_folder) in message and "test, train" in message


def test_split_without_class_folders(tiny_folder):
    (tiny_folder / "empty").mkdir()
    with pytest.raises(LatentDistillError) as error:
        ImageFolder.scan(tiny_folder, "empty")
    assert str(tiny_folder / "empty") in one_line(error)


def test_empty_class_folder_is_named(tiny_folder):
    (tiny_folder / "train" / "class_d").mkdir()
    (tiny_folder / "train" / "class_d" / "readme.txt").write_text("no images here")
    with pytest.raises(LatentDistillError) as error:
        ImageFolder.scan(tiny_folder, "train")
    assert str(tiny_folder / "train" / "class_d") in one_line(error)


def test_test_split_with_different_classes(tiny_folder):
    train = ImageFolder.scan(tiny_folder, "train")
    shutil.move(tiny_folder / "test" / "class_c", tiny_folder / "test" / "class_z")
    with pytest.raises(LatentDistillError) as error:
        ImageFolder.scan(tiny_folder, "test", classes=train.classes)
    message = one_line(error)
    assert str(tiny_folder / "test") in message and "class_c" in message and "class_z" in message


def test_scan_real_cifar10_test_split(shared_dir):
    root = shared_dir / "data" / "cifar10"
    if not (root / "test").is_dir():
        pytest.skip(f"CIFAR-10 not found under {root}")
    folder = ImageFolder.scan(root, "test")
    assert len(folder.classes) == 10 and len(folder) == 10000


# ---------------------------------------------------------------------------------------- load_image


def test_load_image_rgb_is_exact(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (R, R, 3), dtype=np.uint8)
    Image.fromarray(array, "RGB").save(tmp_path / "x.png")
    image = load_image(tmp_path / "x.png", R)
    assert image.dtype == torch.uint8 and image.shape == (3, R, R)
    assert torch.equal(image, torch.from_numpy(array).permute(2, 0, 1))


def test_load_image_grayscale(tmp_path):
    Image.new("L", (R, R), 77).save(tmp_path / "gray.png")
    image = load_image(tmp_path / "gray.png", R)
    assert image.shape == (3, R, R) and bool((image == 77).all())


def test_load_image_rgba_is_composited_on_white(tmp_path):
    Image.new("RGBA", (R, R), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGBA", (R, R), (10, 20, 30, 255)).save(tmp_path / "opaque.png")
    assert bool((load_image(tmp_path / "clear.png", R) == 255).all())
    opaque = load_image(tmp_path / "opaque.png", R)
    assert opaque[:, 0, 0].tolist() == [10, 20, 30]


def test_load_image_palette(tmp_path):
    Image.new("RGB", (R, R), (200, 100, 50)).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    transparent = Image.new("P", (R, R), 0)
    transparent.putpalette([0, 0, 0] * 256)
    transparent.info["transparency"] = 0
    transparent.save(tmp_path / "pt.png", transparency=0)
    image = load_image(tmp_path / "p.png", R)
    assert image.shape == (3, R, R) and image[:, 5, 5].tolist() == [200, 100, 50]
    assert bool((load_image(tmp_path / "pt.png", R) == 255).all())


@pytest.mark.parametrize("size", [(23, 17), (17, 23), (64, 48), (8, 8)])
def test_load_image_odd_sizes_are_resized_and_centre_cropped(tmp_path, size):
    Image.new("RGB", size, (30, 60, 90)).save(tmp_path / "odd.jpg", quality=95)
    image = load_image(tmp_path / "odd.jpg", R)
    assert image.shape == (3, R, R)
    assert (image.float().mean(dim=(1, 2)) - torch.tensor([30.0, 60.0, 90.0])).abs().max() < 4


def test_load_image_keeps_the_centre_of_a_wide_image(tmp_path):
    array = np.zeros((16, 48, 3), dtype=np.uint8)
    array[:, 16:32] = 255  # a white middle third
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", R)
    assert image.float().mean() > 250


@pytest.mark.parametrize("kind", ["corrupt_jpg", "truncated_png", "empty", "text"])
def test_unreadable_image_names_the_file(tmp_path, kind):
    if kind == "corrupt_jpg":
        path = corrupt(tmp_path / "bad.jpg")
    elif kind == "truncated_png":
        path = tmp_path / "cut.png"
        array = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        path.write_bytes(png_bytes(Image.fromarray(array))[:400])
    elif kind == "empty":
        path = tmp_path / "empty.png"
        path.write_bytes(b"")
    else:
        path = tmp_path / "notes.bmp"
        path.write_text("hello")
    with pytest.raises(LatentDistillError) as error:
        load_image(path, R)
    assert str(path) in one_line(error)


def test_missing_image_file(tmp_path):
    with pytest.raises(LatentDistillError) as error:
        load_image(tmp_path / "gone.png", R)
    assert str(tmp_path / "gone.png") in one_line(error)


def test_load_images_skip_bad_keeps_the_rest(tiny_folder):
    folder = ImageFolder.scan(tiny_folder, "train")
    files = list(folder.files)
    corrupt(files[3])
    truncate(files[7], 0.3)
    with pytest.raises(LatentDistillError) as error:
        load_images(files, R, progress=False)
    assert str(files[3]) in one_line(error)

    images, kept, bad = load_images(files, R, skip_bad=True, progress=False)
    assert [path for path, _ in bad] == [files[3], files[7]]
    assert all(str(path) in reason for path, reason in bad)
    assert kept == [i for i in range(len(files)) if i not in (3, 7)]
    assert images.shape == (len(files) - 2, 3, R, R) and images.dtype == torch.uint8
    assert torch.equal(images[3], load_image(files[4], R))


# ---------------------------------------------------------------------------------- train/validation


def test_split_train_validation():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 5)[torch.randperm(22, generator=torch.Generator().manual_seed(1))]
    train, validation = split_train_validation(labels, 2, seed=0)
    again_train, again_validation = split_train_validation(labels, 2, seed=0)
    assert torch.equal(train, again_train) and torch.equal(validation, again_validation)
    assert set(train.tolist()).isdisjoint(validation.tolist())
    assert sorted(train.tolist() + validation.tolist()) == list(range(22))
    assert torch.bincount(labels[validation]).tolist() == [2, 2, 2]
    assert torch.bincount(labels[train]).tolist() == [8, 5, 3]
    assert torch.equal(validation, validation.sort().values)
    _, other = split_train_validation(labels, 2, seed=1)
    assert not torch.equal(other, validation)


def test_split_train_validation_too_small_class():
    labels = torch.tensor([0] * 10 + [1] * 3)
    with pytest.raises(LatentDistillError) as error:
        split_train_validation(labels, 3, seed=0)
    message = one_line(error)
    assert "class '1'" in message and "data.val_per_class" in message
    with pytest.raises(LatentDistillError, match="class 'cat' has 3 images"):
        split_train_validation(labels, 3, seed=0, classes=["dog", "cat"])


# ------------------------------------------------------------------------------------- latent cache


def test_encode_writes_shards_and_meta_then_reuses_them(tiny_folder, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    directory = tmp_path / "cache" / "train"
    cache = encode_dataset(folder, autoencoder, R, directory, shard_size=16, batch_size=8, progress=False)
    n = len(folder)
    assert cache.images.shape == (n, 3, R, R) and cache.images.dtype == torch.uint8
    assert cache.latents.shape == (n, 4, R // 8, R // 8) and cache.latents.dtype == torch.float32
    assert cache.labels.tolist() == list(folder.labels)
    assert cache.classes == list(CLASSES)
    expected = autoencoder.encode_batched(cache.images.float() / 255)
    torch.testing.assert_close(cache.latents, expected)

    shards = shard_files(directory)
    assert [path.name for path in shards] == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    assert load_file(shards[-1])["images"].shape[0] == n - 32
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["complete"] is True and meta["skipped"] == []
    assert meta["autoencoder"] == autoencoder.spec() and meta["autoencoder"]["latent_channels"] == 4
    assert meta["resolution"] == R and meta["fingerprint"] == folder.fingerprint() and meta["shard_size"] == 16
    assert [shard["count"] for shard in meta["shards"]] == [16, 16, 4]
    assert not list(directory.glob(".*.tmp"))

    before = {path.name: path.stat().st_mtime_ns for path in directory.iterdir()}
    again = encode_dataset(folder, autoencoder, R, directory, shard_size=16, batch_size=8, progress=False)
    assert {path.name: path.stat().st_mtime_ns for path in directory.iterdir()} == before
    assert torch.equal(again.latents, cache.latents) and torch.equal(again.images, cache.images)
    loaded = LatentCache.load(directory)
    assert torch.equal(loaded.latents, cache.latents) and torch.equal(loaded.labels, cache.labels)


def test_image_only_cache(tiny_folder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "test")
    cache = encode_dataset(folder, None, R, tmp_path / "test", progress=False)
    assert cache.latents is None and cache.images.shape == (len(folder), 3, R, R)
    assert json.loads((tmp_path / "test" / "meta.json").read_text())["autoencoder"] is None


@pytest.mark.parametrize(
    "change, key",
    [("autoencoder", "autoencoder"), ("resolution", "resolution"), ("shard_size", "shard_size"), ("files", "fingerprint")],
)
def test_cache_built_from_other_inputs_is_refused_and_left_alone(tiny_folder, autoencoder, tmp_path, snapshot, change, key):
    folder = ImageFolder.scan(tiny_folder, "train")
    directory = tmp_path / "cache"
    encode_dataset(folder, autoencoder, R, directory, shard_size=16, progress=False)
    before = snapshot(directory)
    kwargs = dict(autoencoder=autoencoder, resolution=R, shard_size=16)
    if change == "autoencoder":
        kwargs["autoencoder"] = TinyAutoencoderFamily.random("taef1", seed=0)
    elif change == "resolution":
        kwargs["resolution"] = 24
    elif change == "shard_size":
        kwargs["shard_size"] = 8
    else:
        Image.new("RGB", (R, R)).save(tiny_folder / "train" / "class_a" / "new.png")
        folder = ImageFolder.scan(tiny_folder, "train")
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(folder, directory=directory, progress=False, **kwargs)
    message = one_line(error)
    assert str(directory) in message and f"{key}=" in message
    assert snapshot(directory) == before


def test_incomplete_cache_is_not_loadable(tmp_path):
    with pytest.raises(LatentDistillError) as error:
        LatentCache.load(tmp_path / "nothing")
    assert str(tmp_path / "nothing") in one_line(error)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"'])
def test_corrupt_meta_names_the_file(tiny_folder, tmp_path, snapshot, text):
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "meta.json").write_text(text)
    before = snapshot(directory)
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(ImageFolder.scan(tiny_folder, "test"), None, R, directory, progress=False)
    assert str(directory / "meta.json") in one_line(error)
    assert snapshot(directory) == before


def test_interrupted_encode_resumes_to_the_same_bytes(tiny_folder, autoencoder, tmp_path, monkeypatch):
    folder = ImageFolder.scan(tiny_folder, "train")
    fresh = tmp_path / "fresh"
    encode_dataset(folder, autoencoder, R, fresh, shard_size=8, batch_size=4, progress=False)

    resumed = tmp_path / "resumed"
    calls = {"count": 0}
    real_save = latent_cache.atomic_save_file

    def crash_on_third_shard(tensors, path, metadata=None):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        real_save(tensors, path, metadata)

    monkeypatch.setattr(latent_cache, "atomic_save_file", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(folder, autoencoder, R, resumed, shard_size=8, batch_size=4, progress=False)
    monkeypatch.setattr(latent_cache, "atomic_save_file", real_save)
    meta = json.loads((resumed / "meta.json").read_text())
    assert meta["complete"] is False and len(meta["shards"]) == 2
    assert len(shard_files(resumed)) == 2 and not list(resumed.glob(".*.tmp"))
    with pytest.raises(LatentDistillError, match="incomplete"):
        LatentCache.load(resumed)
    kept = {path.name: path.stat().st_mtime_ns for path in shard_files(resumed)}

    encode_dataset(folder, autoencoder, R, resumed, shard_size=8, batch_size=4, progress=False)
    assert {path.name: path.stat().st_mtime_ns for path in shard_files(resumed)[:2]} == kept  # not redone
    assert sorted(path.name for path in resumed.iterdir()) == sorted(path.name for path in fresh.iterdir())
    for path in fresh.iterdir():
        assert (resumed / path.name).read_bytes() == path.read_bytes(), path.name


def test_resume_after_dropping_the_last_shard_from_meta(tiny_folder, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    directory = tmp_path / "cache"
    encode_dataset(folder, autoencoder, R, directory, shard_size=10, progress=False)
    reference = {path.name: path.read_bytes() for path in directory.iterdir()}
    meta = json.loads((directory / "meta.json").read_text())
    last = meta["shards"].pop()
    meta["complete"] = False
    (directory / "meta.json").write_text(json.dumps(meta, indent=1))
    (directory / last["file"]).unlink()
    cache = encode_dataset(folder, autoencoder, R, directory, shard_size=10, progress=False)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == reference
    assert len(cache.labels) == len(folder)


def test_truncated_shard_names_it_and_a_deleted_one_is_encoded_again(tiny_folder, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    directory = tmp_path / "cache"
    encode_dataset(folder, autoencoder, R, directory, shard_size=10, progress=False)
    reference = {path.name: path.read_bytes() for path in directory.iterdir()}
    shard = directory / "shard-00001.safetensors"
    truncate(shard)
    for attempt in (lambda: LatentCache.load(directory), lambda: encode_dataset(folder, autoencoder, R, directory, shard_size=10, progress=False)):
        with pytest.raises(LatentDistillError) as error:
            attempt()
        assert str(shard) in one_line(error)
    # The message says to delete the shard: doing so re-encodes it (and, simply, every shard after it).
    shard.unlink()
    cache = encode_dataset(folder, autoencoder, R, directory, shard_size=10, progress=False)
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == reference
    assert cache.latents.shape[0] == len(folder)


def test_skip_bad_records_skipped_files(tiny_folder, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    bad = [corrupt(folder.files[1]), truncate(folder.files[20], 0.3)]
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(folder, autoencoder, R, tmp_path / "strict", shard_size=16, progress=False)
    assert str(bad[0]) in one_line(error)

    cache = encode_dataset(folder, autoencoder, R, tmp_path / "cache", shard_size=16, skip_bad=True, progress=False)
    assert len(cache.labels) == len(folder) - 2 and cache.latents.shape[0] == len(folder) - 2
    meta = json.loads((tmp_path / "cache" / "meta.json").read_text())
    assert [entry[0] for entry in meta["skipped"]] == [str(path) for path in bad]
    assert torch.bincount(cache.labels).tolist() == [TRAIN_PER_CLASS - 1, TRAIN_PER_CLASS - 1, TRAIN_PER_CLASS]

    # A failed strict encode resumes with skip_bad from where it stopped.
    resumed = encode_dataset(folder, autoencoder, R, tmp_path / "strict", shard_size=16, skip_bad=True, progress=False)
    assert torch.equal(resumed.latents, cache.latents)


def test_class_with_only_corrupt_images(tiny_folder, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    for index, path in enumerate(folder.files):
        if folder.labels[index] == 1:
            corrupt(path, seed=index)
    directory = tmp_path / "cache"
    for _ in range(2):  # on the first encode and when the (complete) cache is reused
        with pytest.raises(LatentDistillError) as error:
            encode_dataset(folder, autoencoder, R, directory, shard_size=12, skip_bad=True, progress=False)
        message = one_line(error)
        assert "class_b" in message and str(tiny_folder / "train") in message


def test_encoding_progress_moves_per_batch(tiny_folder, tmp_path, monkeypatch):
    """The encoding bar moves once per read-and-encode batch, not once per shard (9,469 images showed 0% until
    the end when it moved per 10,000-image shard)."""
    updates = []

    class Recording:
        def __init__(self, *args, **kwargs):
            pass

        def update(self, count):
            updates.append(count)

        def close(self):
            pass

    monkeypatch.setattr(latent_cache, "tqdm", Recording)
    folder = ImageFolder.scan(tiny_folder, "train")
    latent_cache.encode_dataset(folder, None, R, tmp_path / "cache", shard_size=100, batch_size=5, progress=True)
    assert updates == [5] * (len(folder) // 5) + ([len(folder) % 5] if len(folder) % 5 else [])
