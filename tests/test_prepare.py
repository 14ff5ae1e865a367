"""`prepare_dataset`: CIFAR binary archives, built here in the publisher's exact layout, become ImageFolder splits."""

import hashlib
import io
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from latentdistill.data import prepare
from latentdistill.data.image_folder import ImageFolder
from latentdistill.data.prepare import DATASETS, prepare_dataset
from latentdistill.errors import LatentDistillError

from helpers import one_line

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = tuple(f"fine_{index:03d}" for index in range(100))


def records(rng, labels, label_bytes):
    """Binary records for ``labels`` (one per label, in order) and their images as HxWx3 uint8 arrays."""
    images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
    heads = np.zeros((len(labels), label_bytes), dtype=np.uint8)
    heads[:, -1] = labels
    if label_bytes == 2:
        heads[:, 0] = (np.asarray(labels) * 7 + 3) % 20  # a coarse label that differs from the fine one
    planes = images.transpose(0, 3, 1, 2).reshape(len(labels), -1)  # 1024 R, 1024 G, 1024 B, row-major
    return np.concatenate([heads, planes], axis=1).tobytes(), images


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def cifar_archive(path, name="cifar10", per_class=3, extra=(), seed=0):
    """An archive in the binary layout of ``name`` with ``per_class`` records of each class per record file,
    labels shuffled; returns the archive and, per split, each class's images in record order."""
    layout, rng = DATASETS[name].layout, np.random.default_rng(seed)
    classes = CIFAR10_CLASSES if name == "cifar10" else CIFAR100_CLASSES
    expected = {split: {c: [] for c in classes} for split in ("train", "test")}
    with tarfile.open(path, "w:gz") as tar:
        add(tar, f"{layout.folder}/{layout.names}", ("\n".join(classes) + "\n\n").encode())
        for split, files in (("train", layout.train), ("test", layout.test)):
            for file in files:
                labels = rng.permutation(np.repeat(np.arange(len(classes)), per_class))
                data, images = records(rng, labels, layout.label_bytes)
                add(tar, f"{layout.folder}/{file}", data)
                for label, image in zip(labels, images):
                    expected[split][classes[label]].append(image)
        add(tar, f"{layout.folder}/readme.html", b"<html></html>")
        for member_name, data in extra:
            add(tar, member_name, data)
    return path, expected


def sha256(path):
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.fixture
def no_network(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)


def test_cifar10_archive_becomes_an_image_folder_with_exact_pixels(tmp_path):
    archive, expected = cifar_archive(tmp_path / "cifar-10-binary.tar.gz")
    root = prepare_dataset("cifar10", tmp_path / "cifar10", archive=archive, progress=False,
                           expected_checksum=sha256(archive))
    assert root == tmp_path / "cifar10"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]  # no partial folders, no download left
    for split, per_class in (("train", 15), ("test", 3)):
        assert sorted(p.name for p in (root / split).iterdir() if p.is_dir()) == sorted(CIFAR10_CLASSES)
        for name in CIFAR10_CLASSES:
            files = sorted((root / split / name).iterdir())
            assert [f.name for f in files] == [f"{i:05d}.png" for i in range(per_class)]
            for file, image in zip(files, expected[split][name]):
                with Image.open(file) as png:
                    assert png.format == "PNG" and png.mode == "RGB"
                    assert np.array_equal(np.asarray(png), image)
    train = ImageFolder.scan(root, "train")
    assert train.classes == tuple(sorted(CIFAR10_CLASSES)) and len(train) == 150
    assert len(ImageFolder.scan(root, "test", classes=train.classes)) == 30


def test_rerun_after_completion_changes_nothing_and_downloads_nothing(tmp_path, no_network, capsys):
    archive, _ = cifar_archive(tmp_path / "a.tar.gz")
    root = prepare_dataset("cifar10", tmp_path / "out", archive=archive, progress=False,
                           expected_checksum=sha256(archive))
    before = snapshot(root)
    assert prepare_dataset("cifar10", root) == root  # no archive: a download would fail offline
    assert "already prepared" in capsys.readouterr().err
    assert snapshot(root) == before
    (root / "train" / "cat" / "00000.png").unlink()
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", root, archive=archive, progress=False, expected_checksum=sha256(archive))
    assert "incomplete" in one_line(error)
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar100", root, archive=archive, progress=False)
    assert "'cifar10' split, not 'cifar100'" in one_line(error)


def test_checksum_mismatch_names_the_file_and_both_checksums(tmp_path):
    archive, _ = cifar_archive(tmp_path / "cifar-10-binary.tar.gz")
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", tmp_path / "out", archive=archive, progress=False)
    message = one_line(error)
    assert str(archive) in message and DATASETS["cifar10"].sha256 in message
    assert hashlib.sha256(archive.read_bytes()).hexdigest() in message
    assert not (tmp_path / "out" / "train").exists()


def test_truncated_archive_is_one_line_and_a_rerun_redoes_it_cleanly(tmp_path):
    archive, expected = cifar_archive(tmp_path / "good.tar.gz")
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    root = tmp_path / "out"
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", root, archive=truncated, progress=False, expected_checksum=sha256(truncated))
    assert str(truncated) in one_line(error) and "truncated or corrupt" in one_line(error)
    assert not (root / "train").exists() and not (root / "test").exists()
    prepare_dataset("cifar10", root, archive=archive, progress=False, expected_checksum=sha256(archive))
    assert len(ImageFolder.scan(root, "train")) == 150
    assert not any(p.name.endswith(".partial") for p in root.iterdir())


def test_interrupted_prepare_leaves_no_half_made_split(tmp_path, monkeypatch):
    archive, _ = cifar_archive(tmp_path / "a.tar.gz")
    root, real = tmp_path / "out", prepare._write_images
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        real(*args, **kwargs)
        if len(calls) == 2:  # in the second record file of train
            raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "_write_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("cifar10", root, archive=archive, progress=False, expected_checksum=sha256(archive))
    assert not (root / "train").exists() and (root / ".train.partial").is_dir()
    monkeypatch.setattr(prepare, "_write_images", real)
    prepare_dataset("cifar10", root, archive=archive, progress=False, expected_checksum=sha256(archive))
    assert len(ImageFolder.scan(root, "train")) == 150 and not (root / ".train.partial").exists()


@pytest.mark.parametrize("member", ["../evil.bin", "/tmp/evil.bin", "cifar-10-batches-bin/../../evil.bin"])
def test_path_traversal_member_is_refused(tmp_path, member):
    archive, _ = cifar_archive(tmp_path / "a.tar.gz", per_class=1, extra=[(member, b"x")])
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", tmp_path / "out", archive=archive, progress=False, expected_checksum=sha256(archive))
    assert "unsafe member path" in one_line(error) and str(archive) in one_line(error)
    assert not (tmp_path / "out" / "train").exists() and not (tmp_path / "evil.bin").exists()


def test_python_version_or_missing_member_is_one_line(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add(tar, "cifar-10-batches-py/data_batch_1", b"pickle")
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", tmp_path / "out", archive=archive, progress=False, expected_checksum=sha256(archive))
    assert "lacks the file cifar-10-batches-bin/batches.meta.txt" in one_line(error)


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("imagenet", tmp_path / "out")
    assert "cifar10, cifar100" in one_line(error)
    assert not (tmp_path / "out").exists()


def test_offline_says_where_to_download_and_what_to_run(tmp_path, no_network):
    root = tmp_path / "out"
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", root, progress=False)
    message = one_line(error)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz" in message
    assert f"latentdistill prepare cifar10 {root} --archive PATH" in message
    assert list(root.iterdir()) == []  # the temporary download file is gone


def test_download_is_verified_then_converted_and_removed(tmp_path, monkeypatch):
    archive, _ = cifar_archive(tmp_path / "a.tar.gz", per_class=1)
    data = archive.read_bytes()

    class Response(io.BytesIO):
        headers = {"Content-Length": str(len(data))}

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Response(data))
    root = prepare_dataset("cifar10", tmp_path / "out", progress=False, expected_checksum=sha256(archive))
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    assert len(ImageFolder.scan(root, "train")) == 50


def test_foreign_files_in_a_split_folder_are_refused(tmp_path):
    archive, _ = cifar_archive(tmp_path / "a.tar.gz", per_class=1)
    (tmp_path / "out" / "train" / "mine").mkdir(parents=True)
    (tmp_path / "out" / "train" / "mine" / "photo.jpg").write_bytes(b"x")
    with pytest.raises(LatentDistillError) as error:
        prepare_dataset("cifar10", tmp_path / "out", archive=archive, progress=False, expected_checksum=sha256(archive))
    assert "not written by `latentdistill prepare`" in one_line(error)
    assert (tmp_path / "out" / "train" / "mine" / "photo.jpg").exists()


def test_cifar100_uses_the_fine_labels(tmp_path):
    archive, expected = cifar_archive(tmp_path / "cifar-100-binary.tar.gz", name="cifar100", per_class=2)
    root = prepare_dataset("cifar100", tmp_path / "out", archive=archive, progress=False,
                           expected_checksum=sha256(archive))
    train = ImageFolder.scan(root, "train")
    assert train.classes == CIFAR100_CLASSES and len(train) == 200
    assert len(ImageFolder.scan(root, "test")) == 200
    for name in ("fine_000", "fine_057", "fine_099"):
        for file, image in zip(sorted((root / "train" / name).iterdir()), expected["train"][name]):
            with Image.open(file) as png:
                assert np.array_equal(np.asarray(png), image)
