"""``latentdistill prepare NAME DIR``: a public dataset, downloaded (or given) and written in our layout.

The layout is ImageFolder: ``DIR/train/<class>/NNNNN.png`` and ``DIR/test/<class>/NNNNN.png`` (lossless
PNG, index zero-padded per class, in the archive's record order). Each split is written into
``DIR/.<split>.partial`` and renamed into place when complete, with a ``.prepared.json`` marker inside,
so an interrupted prepare leaves no half-made split and a rerun redoes only what is missing.

Archives are the publishers' own, checked against their checksums before anything is read, and read
straight from the tar (no extraction to disk, no unpickling: the CIFAR *binary* versions). Offline,
download the file elsewhere: ``latentdistill prepare cifar10 DIR --archive cifar-10-binary.tar.gz``.

Super-resolution sets are not prepared here: no stable URL with a published checksum is known to us.
Where they come from (each is a plain folder of images, which is all ``sr.train`` / ``sr.test`` need):

- Set5 (5 test images): Bevilacqua et al., BMVC 2012,
  http://people.rennes.inria.fr/Aline.Roumy/results/SR_BMVC12.html; also in Jia-Bin Huang's
  https://github.com/jbhuang0604/SelfExSR (``data/Set5``).
- BSD100 (test) and BSD200 (train): the test and train splits of the Berkeley Segmentation Dataset BSDS300
  (Martin et al., ICCV 2001), https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/; BSD100 also in SelfExSR.
- T91 (91 training images): Yang et al., "Image super-resolution via sparse representation", IEEE TIP
  2010, distributed with their ScSR code and with SRCNN's training code (Dong et al., ECCV 2014).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from latentdistill.errors import LatentDistillError
from latentdistill.io import WriteError, atomic_write_text, check_writable, display_path, error_reason

SPLITS = ("train", "test")
MARKER = ".prepared.json"
PIXELS = 3 * 32 * 32  # 1024 R, 1024 G, 1024 B bytes, each row-major 32x32
CHUNK = 1 << 20
RECORDS_PER_READ = 500  # the progress bar moves once per this many images
SAFE_CLASS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class CifarBinary:
    """How to read the CIFAR binary version: fixed-size records of label bytes, then 3072 pixel bytes."""

    folder: str  # the archive's top folder
    train: tuple[str, ...]  # record files, in order
    test: tuple[str, ...]
    names: str  # class names, one a line
    label_bytes: int  # bytes before the pixels
    label_index: int  # which of them is the class label
    num_classes: int


@dataclass(frozen=True)
class PreparableDataset:
    name: str
    urls: tuple[str, ...]  # tried in order
    file_name: str
    sha256: str
    md5: str  # the publisher's
    layout: CifarBinary


DATASETS: dict[str, PreparableDataset] = {
    "cifar10": PreparableDataset(
        "cifar10",  # the CIFAR page's host, then a second Toronto host seen serving the same file
        ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
         "https://cave.cs.toronto.edu/kriz/cifar-10-binary.tar.gz"), "cifar-10-binary.tar.gz",
        sha256="c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        md5="c32a1d4ab5d03f1284b67883e8d87530",
        layout=CifarBinary("cifar-10-batches-bin", tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
                           ("test_batch.bin",), "batches.meta.txt", label_bytes=1, label_index=0, num_classes=10),
    ),
    "cifar100": PreparableDataset(
        "cifar100",
        ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
         "https://cave.cs.toronto.edu/kriz/cifar-100-binary.tar.gz"), "cifar-100-binary.tar.gz",
        sha256="58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
        md5="03b5dce01913d631647c71ecec9e9cb8",
        layout=CifarBinary("cifar-100-binary", ("train.bin",), ("test.bin",), "fine_label_names.txt",
                           label_bytes=2, label_index=1, num_classes=100),  # coarse byte, then fine
    ),
}


def prepare_dataset(
    name: str,
    directory: str | Path,
    archive: str | Path | None = None,
    progress: bool = True,
    *,
    expected_checksum: str | None = None,
) -> Path:
    """Write dataset ``name`` into ``directory`` as ``train/`` and ``test/`` ImageFolder splits; return it.

    ``archive``: the publisher's file, already downloaded (checked like a download); without it the file
    is downloaded into a temporary file inside ``directory`` and removed afterwards. Splits already
    complete are kept as they are. ``expected_checksum`` (``sha256:<hex>`` or ``md5:<hex>``) replaces the
    publisher's checksums: only for archives you built yourself in the same layout (tests do).
    """
    if name not in DATASETS:
        raise LatentDistillError(f"unknown dataset '{display_path(name)}' (known: {', '.join(sorted(DATASETS))})")
    spec, root = DATASETS[name], Path(directory)
    todo = [split for split in SPLITS if not _is_complete(root, split, spec)]
    if not todo:
        if progress:
            print(f"{name} is already prepared in {display_path(root)}", file=sys.stderr, flush=True)
        return root
    checksums = _expected(spec, expected_checksum)
    if archive is not None and not Path(archive).is_file():
        raise LatentDistillError(f"archive not found: {display_path(archive)}")
    check_writable(root, "dataset")
    if archive is None:
        handle, temporary = tempfile.mkstemp(dir=root, prefix=f".{spec.file_name}.", suffix=".download")
        os.close(handle)
    path = Path(temporary if archive is None else archive)
    try:
        if archive is None:
            _download(spec, path, root, progress)
        _verify(path, checksums)
        _convert(path, root, spec, todo, progress)
    finally:
        if archive is None:
            path.unlink(missing_ok=True)
    return root


def _expected(spec: PreparableDataset, override: str | None) -> dict[str, str]:
    if override is None:
        return {"sha256": spec.sha256, "md5": spec.md5}
    kind, _, value = override.partition(":")
    if kind not in ("sha256", "md5") or not value:
        raise LatentDistillError(f"expected_checksum must be 'sha256:<hex>' or 'md5:<hex>', got '{override}'")
    return {kind: value.lower()}


def _verify(path: Path, expected: dict[str, str]) -> None:
    hashes = {kind: hashlib.new(kind) for kind in expected}
    try:
        with open(path, "rb") as file:
            while chunk := file.read(CHUNK):
                for digest in hashes.values():
                    digest.update(chunk)
    except OSError as error:
        raise LatentDistillError(f"cannot read archive {display_path(path)}: {error_reason(error)}") from None
    for kind, digest in hashes.items():
        if digest.hexdigest() != expected[kind]:
            raise LatentDistillError(f"checksum mismatch for archive {display_path(path)}: expected {kind} "
                                     f"{expected[kind]}, got {digest.hexdigest()} (a partial download or another file)")


def _download(spec: PreparableDataset, path: Path, root: Path, progress: bool) -> None:
    """The archive, downloaded into ``path``; offline, one line saying what to do instead."""
    reasons = []
    for url in spec.urls:
        try:
            return _fetch(url, path, progress)
        except WriteError:
            raise
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, a transfer cut short
            reasons.append(f"{url}: {error_reason(getattr(error, 'reason', None) or error)}")
    raise LatentDistillError(
        f"cannot download {spec.name} ({'; '.join(reasons)}): download {spec.urls[0]} on a machine with "
        f"internet, then run `latentdistill prepare {spec.name} {display_path(root)} --archive PATH`"
    )


def _fetch(url: str, path: Path, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        with open(path, "wb") as file, tqdm(total=total, unit="B", unit_scale=True, desc=f"download {Path(url).name}",
                                            disable=not progress, leave=False) as bar:
            while chunk := response.read(CHUNK):
                try:
                    file.write(chunk)
                except OSError as error:
                    raise WriteError(f"cannot write {display_path(path)}: {error_reason(error)}") from None
                bar.update(len(chunk))


def _is_complete(root: Path, split: str, spec: PreparableDataset) -> bool:
    """Whether ``root/split`` is a finished split of ``spec``; an empty folder is removed; anything else
    there (files from elsewhere, another dataset's split, missing images) is refused in one line."""
    folder = root / split
    if not folder.is_dir():
        return False  # absent (or a file, which the final rename refuses in one line)
    entries = list(folder.iterdir())
    if not entries:
        folder.rmdir()
        return False
    try:
        marker = json.loads((folder / MARKER).read_text())
        if not isinstance(marker, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        raise LatentDistillError(f"{display_path(folder)} is not empty and was not written by `latentdistill "
                                 "prepare`: move it away or choose another folder") from None
    if marker.get("dataset") != spec.name:
        raise LatentDistillError(f"{display_path(folder)} holds a prepared '{marker.get('dataset')}' split, "
                                 f"not '{spec.name}': choose another folder")
    counts = marker.get("counts", {})
    found = {path.name: len(list(path.glob("*.png"))) for path in entries if path.is_dir()}
    if found != counts:
        raise LatentDistillError(f"{display_path(folder)} is incomplete (images were removed or added since "
                                 "it was prepared): delete it and run prepare again")
    return True


def _convert(path: Path, root: Path, spec: PreparableDataset, splits: list[str], progress: bool) -> None:
    layout = spec.layout
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _members(tar, path, layout)
            text = tar.extractfile(members[layout.names]).read().decode("utf-8", "replace")
            classes = _class_names(text, path, layout)
            for split in splits:
                files = layout.train if split == "train" else layout.test
                _convert_split(tar, [members[name] for name in files], root, split, spec, classes, progress, path)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, WriteError):
            raise
        reason = error_reason(error)
        raise LatentDistillError(f"archive {display_path(path)} is truncated or corrupt ({reason})") from None


def _members(tar: tarfile.TarFile, path: Path, layout: CifarBinary) -> dict[str, tarfile.TarInfo]:
    """The members the layout needs, by short name; any absolute or ``..`` path in the archive is refused."""
    found = {}
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or ".." in parts or ".." in member.name.split("\\"):
            raise LatentDistillError(
                f"archive {display_path(path)} holds an unsafe member path '{display_path(member.name)}': refusing it"
            )
        found[member.name.removeprefix("./")] = member
    wanted = {name: found.get(f"{layout.folder}/{name}") for name in (layout.names, *layout.train, *layout.test)}
    for name, member in wanted.items():
        if member is None or not member.isfile():
            raise LatentDistillError(f"archive {display_path(path)} lacks the file {layout.folder}/{name} "
                                     "(is it the binary version?)")
    return wanted


def _class_names(text: str, path: Path, layout: CifarBinary) -> list[str]:
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != layout.num_classes or len(set(names)) != len(names) or not all(
            SAFE_CLASS_NAME.fullmatch(name) for name in names):
        raise LatentDistillError(f"archive {display_path(path)}: {layout.folder}/{layout.names} should hold "
                                 f"{layout.num_classes} distinct plain class names, found {len(names)}")
    return names


def _convert_split(tar, members, root: Path, split: str, spec: PreparableDataset, classes: list[str],
                   progress: bool, path: Path) -> None:
    """Write one split into ``root/.split.partial``, then rename it to ``root/split`` (the marker inside
    says it is complete)."""
    layout = spec.layout
    record = layout.label_bytes + PIXELS
    partial = root / f".{split}.partial"
    try:
        if partial.exists():
            shutil.rmtree(partial)  # left by an interrupted prepare
        for name in classes:
            (partial / name).mkdir(parents=True)
    except OSError as error:
        raise WriteError(f"cannot write {display_path(partial)}: {error_reason(error)}") from None
    counts = dict.fromkeys(classes, 0)
    total = sum(member.size for member in members) // record
    with tqdm(total=total, desc=f"{spec.name} {split}", unit="img", disable=not progress) as bar:
        for member in members:
            if member.size % record or member.size == 0:
                raise LatentDistillError(f"archive {display_path(path)}: {member.name} holds {member.size} bytes, "
                                         f"not a whole number of {record}-byte records")
            file = tar.extractfile(member)
            for _ in range(0, member.size // record, RECORDS_PER_READ):
                chunk = file.read(record * RECORDS_PER_READ)
                if not chunk or len(chunk) % record:
                    raise EOFError("unexpected end of data")
                rows = np.frombuffer(chunk, dtype=np.uint8).reshape(-1, record)
                _write_images(rows, layout, classes, counts, partial, path, member.name)
                bar.update(len(rows))
    atomic_write_text(partial / MARKER, json.dumps({"dataset": spec.name, "counts": counts}, indent=1) + "\n")
    try:
        os.sync()  # the images reach the disk before the rename makes the split count as complete
        os.replace(partial, root / split)
    except OSError as error:
        raise WriteError(f"cannot rename {display_path(partial)} to {display_path(root / split)}: "
                         f"{error_reason(error)}") from None


def _write_images(rows: np.ndarray, layout: CifarBinary, classes: list[str], counts: dict[str, int],
                  partial: Path, path: Path, member: str) -> None:
    labels = rows[:, layout.label_index]
    if int(labels.max()) >= layout.num_classes:
        raise LatentDistillError(f"archive {display_path(path)}: {member} holds label {int(labels.max())}, "
                                 f"beyond its {layout.num_classes} classes")
    pixels = rows[:, layout.label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for label, image in zip(labels.tolist(), pixels):
        name = classes[label]
        target = partial / name / f"{counts[name]:05d}.png"
        try:
            Image.fromarray(np.ascontiguousarray(image), "RGB").save(target, format="PNG")
        except OSError as error:
            raise WriteError(f"cannot write {display_path(target)}: {error_reason(error)}") from None
        counts[name] += 1
