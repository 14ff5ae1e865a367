"""Hostile or unusual inputs and outputs: 16-bit images, decompression bombs, file names that are not
UTF-8, the umask, read-only or full folders, and resolutions too large for memory. Each is either read
correctly or refused with one line naming the file or config key, losing nothing already written."""

import errno
import json
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file

import latentdistill.io
from latentdistill.autoencoders import load_autoencoder
from latentdistill.data import ImageFolder, encode_dataset, latent_cache, load_image, load_images
from latentdistill.data.super_resolution import load_hr_images
from latentdistill.errors import LatentDistillError
from latentdistill.io import (
    WriteError,
    atomic_save_file,
    atomic_write_bytes,
    atomic_write_text,
    check_writable,
    display_path,
)

from helpers import CLASSES, TRAIN_PER_CLASS, one_line
from helpers import RESOLUTION as R

# ------------------------------------------------------------------------------------------ helpers


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png16(path: Path, array: np.ndarray) -> Path:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): (H, W) grey or (H, W, 3) RGB."""
    height, width = array.shape[:2]
    colour_type = 2 if array.ndim == 3 else 0
    rows = array.reshape(height, -1).astype(">u2")
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    chunks = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def write_bomb(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (its IHDR patched, CRC fixed)."""
    Image.new("1", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def gradient16(size: int = 64) -> np.ndarray:
    """A full-range 16-bit horizontal gradient, 0 to 65535."""
    return np.tile(np.linspace(0, 65535, size).round().astype(np.uint16), (size, 1))


def tmp_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def can_write_in(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return False
    (folder / ".probe").unlink()
    return True


@pytest.fixture
def autoencoder(tiny_autoencoder_dir):
    return load_autoencoder(str(tiny_autoencoder_dir))


# ------------------------------------------------------------------------------------ 16-bit images


def test_16bit_grey_gradient_reads_like_its_8bit_version(tmp_path):
    values = gradient16()
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    Image.fromarray(np.rint(values / 257).astype(np.uint8), "L").save(tmp_path / "g8.png")
    wide, narrow = load_image(tmp_path / "g16.png", 64), load_image(tmp_path / "g8.png", 64)
    assert abs(wide.float().mean().item() - 127.5) < 1
    assert (wide.int() - narrow.int()).abs().max() <= 1
    assert wide[:, 0, 0].tolist() == [0, 0, 0] and wide[:, 0, -1].tolist() == [255, 255, 255]
    assert abs(load_image(tmp_path / "g16.png", R).float().mean().item() - 127.5) < 2  # resized too


def test_16bit_rgb_gradient_reads_like_its_8bit_version(tmp_path):
    values = np.stack([gradient16(), gradient16().T, 65535 - gradient16()], axis=-1)
    write_png16(tmp_path / "rgb16.png", values)
    Image.fromarray(np.rint(values / 257).astype(np.uint8), "RGB").save(tmp_path / "rgb8.png")
    wide, narrow = load_image(tmp_path / "rgb16.png", 64), load_image(tmp_path / "rgb8.png", 64)
    assert abs(wide.float().mean().item() - 127.5) < 1
    assert (wide.int() - narrow.int()).abs().max() <= 1


def test_32bit_integer_and_float_images_are_scaled(tmp_path):
    values = gradient16()
    Image.fromarray(values.astype(np.int32), "I").save(tmp_path / "i32.tif")
    Image.fromarray((values / 65535).astype(np.float32), "F").save(tmp_path / "f32.tif")
    Image.fromarray(np.rint(values / 257).astype(np.uint8), "L").save(tmp_path / "g8.png")
    narrow = load_image(tmp_path / "g8.png", 64).int()
    for name in ("i32.tif", "f32.tif"):
        assert Image.open(tmp_path / name).mode in ("I", "F")
        assert (load_image(tmp_path / name, 64).int() - narrow).abs().max() <= 1, name


def test_super_resolution_reads_16bit_images(tmp_path):
    Image.fromarray(gradient16()).save(tmp_path / "hr.png")
    (image,) = load_hr_images(tmp_path)
    assert image.dtype == torch.uint8 and abs(image.float().mean().item() - 127.5) < 1


# ---------------------------------------------------------------------------------------- bombs


@pytest.mark.parametrize("size", [(30000, 30000), (10000, 10000)], ids=["error", "warning"])
def test_decompression_bomb_is_refused_in_one_line(tmp_path, size):
    bomb = write_bomb(tmp_path / "bomb.png", *size)
    assert bomb.stat().st_size < 200
    with pytest.raises(LatentDistillError) as error:
        load_image(bomb, R)
    message = one_line(error)
    assert message.startswith(f"cannot read image {bomb}: refused as too large") and "pixels" in message


def test_skip_bad_counts_and_lists_a_bomb(tiny_folder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    bomb = write_bomb(folder.files[5])
    with pytest.raises(LatentDistillError) as error:
        load_images(folder.files, R, progress=False)
    assert str(bomb) in one_line(error)
    images, kept, bad = load_images(folder.files, R, skip_bad=True, progress=False)
    assert [path for path, _ in bad] == [bomb] and len(kept) == len(folder) - 1
    cache = encode_dataset(folder, None, R, tmp_path / "cache", skip_bad=True, progress=False)
    assert len(cache.labels) == len(folder) - 1
    skipped = json.loads((tmp_path / "cache" / "meta.json").read_text())["skipped"]
    assert [entry[0] for entry in skipped] == [str(bomb)] and "too large" in skipped[0][1]


# ------------------------------------------------------------------------ names that are not UTF-8


@pytest.fixture
def bad_name(tiny_folder) -> Path:
    if sys.platform != "linux":
        pytest.skip("file names of arbitrary bytes are a Linux matter")
    path = tiny_folder / "train" / "class_a" / os.fsdecode(b"bad\xff.png")
    try:
        Image.new("RGB", (R, R), (1, 2, 3)).save(path, format="PNG")
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def test_display_path_replaces_bytes_that_are_not_utf8(bad_name):
    assert display_path(bad_name).endswith("bad\ufffd.png")
    assert display_path(Path("plain/é.png")) == "plain/é.png"


def test_a_valid_image_with_a_non_utf8_name_encodes(tiny_folder, bad_name, autoencoder, tmp_path):
    folder = ImageFolder.scan(tiny_folder, "train")
    assert bad_name in folder.files and len(folder.fingerprint()) == 16
    cache = encode_dataset(folder, autoencoder, R, tmp_path / "cache", progress=False)
    assert len(cache.labels) == len(folder) == len(CLASSES) * TRAIN_PER_CLASS + 1
    row = folder.files.index(bad_name)
    assert cache.images[row, :, 0, 0].tolist() == [1, 2, 3]


def test_an_invalid_image_with_a_non_utf8_name_is_named_printably(tiny_folder, bad_name, tmp_path):
    bad_name.write_bytes(b"not an image")
    folder = ImageFolder.scan(tiny_folder, "train")
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(folder, None, R, tmp_path / "strict", progress=False)
    message = one_line(error)
    message.encode("utf-8")  # printable on any UTF-8 stderr: no lone surrogates
    assert display_path(bad_name) in message
    encode_dataset(folder, None, R, tmp_path / "cache", skip_bad=True, progress=False)
    skipped = json.loads((tmp_path / "cache" / "meta.json").read_text())["skipped"]
    assert skipped[0][0] == display_path(bad_name)
    skipped[0][1].encode("utf-8")


# ------------------------------------------------------------------------------------------ umask


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("from_proc", [True, False], ids=["proc", "os.umask"])
def test_atomic_writes_respect_the_umask(tmp_path, monkeypatch, umask, mode, from_proc):
    if not from_proc:  # where /proc is missing, the umask is read with os.umask
        monkeypatch.setattr(latentdistill.io, "_PROC_STATUS", str(tmp_path / "no-proc"))
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "text")
        atomic_write_bytes(tmp_path / "b.bin", b"bytes")
        atomic_save_file({"x": torch.zeros(2)}, tmp_path / "c.safetensors")
        assert os.umask(umask) == umask  # left as it was
    finally:
        os.umask(old)
    for name in ("a.txt", "b.bin", "c.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# --------------------------------------------------------------------------- read-only, full disk


WRITERS = {
    "text": lambda path: atomic_write_text(path, "new"),
    "bytes": lambda path: atomic_write_bytes(path, b"new"),
    "safetensors": lambda path: atomic_save_file({"x": torch.ones(3)}, path),
}


def test_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    (folder / "old.txt").write_text("old")
    folder.chmod(0o555)
    try:
        if can_write_in(folder):
            pytest.skip("this user (root?) can write in a 0555 folder; the full-disk tests cover the path")
        with pytest.raises(LatentDistillError) as error:
            atomic_write_text(folder / "old.txt", "new")
        assert one_line(error) == f"cannot write {folder / 'old.txt'}: Permission denied"
        with pytest.raises(LatentDistillError) as error:
            check_writable(folder / "run", "output_dir")
        assert one_line(error) == f"cannot write in output_dir folder {folder / 'run'}: Permission denied"
        assert (folder / "old.txt").read_text() == "old" and sorted(p.name for p in folder.iterdir()) == ["old.txt"]
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_full_disk_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, writer, step):
    target = tmp_path / "out" / "file"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, step, full)
    with pytest.raises(LatentDistillError) as error:
        WRITERS[writer](target)
    monkeypatch.undo()
    assert one_line(error) == f"cannot write {target}: No space left on device"
    assert isinstance(error.value, OSError)  # callers that caught the raw OSError still catch it
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["file"]


def test_safetensors_error_is_one_line_and_cleaned_up(tmp_path, monkeypatch):
    target = tmp_path / "set.safetensors"
    atomic_save_file({"x": torch.zeros(2)}, target)
    before = target.read_bytes()

    def failing_save_file(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise SafetensorError("Error while serializing: IoError(No space left on device)\nsecond line")

    monkeypatch.setattr(latentdistill.io, "save_file", failing_save_file)
    with pytest.raises(WriteError) as error:
        atomic_save_file({"x": torch.ones(2)}, target)
    assert one_line(error) == f"cannot write {target}: Error while serializing: IoError(No space left on device)"
    assert target.read_bytes() == before and not tmp_files(tmp_path)


def test_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(LatentDistillError) as error:
        atomic_write_text(tmp_path / "plain" / "sub" / "meta.json", "{}")
    assert one_line(error).startswith(f"cannot write {tmp_path / 'plain' / 'sub' / 'meta.json'}: ")
    with pytest.raises(LatentDistillError) as error:
        check_writable(tmp_path / "plain" / "cache", "cache.dir")
    assert one_line(error).startswith(f"cannot write in cache.dir folder {tmp_path / 'plain' / 'cache'}: ")


def test_check_writable_makes_the_folder_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b", "output_dir")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_check_writable_on_a_full_disk(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(LatentDistillError) as error:
        check_writable(tmp_path, "output_dir")
    monkeypatch.undo()
    assert one_line(error) == f"cannot write in output_dir folder {tmp_path}: No space left on device"
    assert not list(tmp_path.iterdir())


def test_encode_into_an_unwritable_cache_is_one_line(tiny_folder, tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    directory = tmp_path / "plain" / "train"
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(ImageFolder.scan(tiny_folder, "test"), None, R, directory, progress=False)
    assert one_line(error).startswith(f"cannot write {directory / 'meta.json'}: ")


def test_full_disk_mid_encode_keeps_written_shards(tiny_folder, tmp_path, monkeypatch):
    folder = ImageFolder.scan(tiny_folder, "train")
    directory = tmp_path / "cache"
    real_save_file = latentdistill.io.save_file
    calls = {"count": 0}

    def fill_up(tensors, filename, metadata=None):
        calls["count"] += 1
        if calls["count"] == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(latentdistill.io, "save_file", fill_up)
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(folder, None, R, directory, shard_size=10, progress=False)
    assert one_line(error) == f"cannot write {directory / 'shard-00001.safetensors'}: No space left on device"
    meta = json.loads((directory / "meta.json").read_text())
    assert [shard["file"] for shard in meta["shards"]] == ["shard-00000.safetensors"] and not tmp_files(directory)
    assert load_file(directory / "shard-00000.safetensors")["images"].shape[0] == 10
    monkeypatch.undo()
    assert len(encode_dataset(folder, None, R, directory, shard_size=10, progress=False).labels) == len(folder)


# ---------------------------------------------------------------------------------------- memory


def test_resolution_too_large_for_memory_is_refused_up_front(tiny_folder, autoencoder, tmp_path, monkeypatch):
    folder = ImageFolder.scan(tiny_folder, "train")
    monkeypatch.setattr(latent_cache, "load_images", lambda *args, **kwargs: pytest.fail("read images"))
    monkeypatch.setattr(latent_cache, "physical_memory", lambda: 10_000)
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(folder, None, R, tmp_path / "cache", progress=False)
    needed = len(folder) * 3 * R * R
    message = one_line(error)
    assert message.startswith(f"config key 'data.resolution' is {R}: ")
    assert f"({needed} bytes)" in message and "(10000 bytes)" in message and str(tiny_folder / "train") in message
    with pytest.raises(LatentDistillError) as error:  # the latents count too
        encode_dataset(folder, autoencoder, R, tmp_path / "cache", progress=False)
    assert f"({needed + len(folder) * 4 * (R // 8) ** 2 * 4} bytes)" in one_line(error)
    assert not (tmp_path / "cache").exists()


def test_resolution_beyond_this_machine(tiny_folder, tmp_path):
    if latent_cache.physical_memory() is None:
        pytest.skip("this platform does not tell its memory")
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(ImageFolder.scan(tiny_folder, "train"), None, 10**7, tmp_path / "cache", progress=False)
    assert "'data.resolution' is 10000000" in one_line(error) and "PB" in one_line(error)
    assert not (tmp_path / "cache").exists()


def test_unknown_memory_does_not_block(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(latent_cache, "physical_memory", lambda: None)
    cache = encode_dataset(ImageFolder.scan(tiny_folder, "test"), None, R, tmp_path / "cache", progress=False)
    assert cache.images.shape[-1] == R


@pytest.mark.parametrize("shards", ['[{"file": "../../elsewhere.safetensors", "count": 1}]', '[["a list"]]', "null"])
def test_meta_pointing_outside_its_folder_is_corrupt(tiny_folder, tmp_path, snapshot, shards):
    directory = tmp_path / "cache"
    directory.mkdir()
    (directory / "meta.json").write_text(f'{{"complete": true, "shards": {shards}, "skipped": []}}')
    before = snapshot(directory)
    with pytest.raises(LatentDistillError) as error:
        encode_dataset(ImageFolder.scan(tiny_folder, "test"), None, R, directory, progress=False)
    assert one_line(error).startswith(f"latent cache record {directory / 'meta.json'} is corrupt")
    assert snapshot(directory) == before
