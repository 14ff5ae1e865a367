"""Pack a folder of files into one safetensors file and back, byte for byte.

For moving an image dataset (CIFAR-10's 60,000 JPEGs) to a machine that takes one folder of limited
size: per-file archive overhead (tar's 512-byte headers, zip's entries) would add 7-30 MB.

    python benchmarks/pack_folder.py pack ../shared/data/cifar10 gpu/cifar10.safetensors
    python benchmarks/pack_folder.py unpack gpu/cifar10.safetensors /tmp/cifar10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def pack(source: Path, target: Path) -> None:
    files = sorted(p for p in source.rglob("*") if p.is_file())
    blobs = [p.read_bytes() for p in files]
    data = torch.frombuffer(bytearray(b"".join(blobs)), dtype=torch.uint8)
    sizes = torch.tensor([len(b) for b in blobs], dtype=torch.int64)
    names = [str(p.relative_to(source)) for p in files]
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({"bytes": data, "sizes": sizes}, str(target), metadata={"names": json.dumps(names)})
    print(f"packed {len(files)} files, {len(data) / 1e6:.1f} MB, into {target}")


def unpack(source: Path, target: Path) -> None:
    with safe_open(str(source), "pt") as handle:
        names = json.loads(handle.metadata()["names"])
    tensors = load_file(str(source))
    data, sizes = tensors["bytes"].numpy().tobytes(), tensors["sizes"].tolist()
    offset = 0
    for name, size in zip(names, sizes):
        path = target / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[offset : offset + size])
        offset += size
    print(f"unpacked {len(names)} files into {target}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    (pack if args.action == "pack" else unpack)(args.source, args.target)
