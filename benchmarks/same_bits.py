"""Do two revisions of latentdistill distill the same bits? Runs one ``latentdistill distill`` command with
each revision's package and compares every tensor of the two exported files.

    git worktree add ../old 841b8d2
    python benchmarks/same_bits.py --old ../old -- --config configs/quickstart.yaml distill.iterations=3

The current checkout is the new revision. Both runs share the latent cache ($LATENTDISTILL_CACHE or
outputs/cache), so the cache is built once; output folders go to --work. Prints one line per tensor
(sha256 prefix of each side, equal or not) and exits 1 when any tensor differs.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors import safe_open

REPO = Path(__file__).resolve().parents[1]


def digests(path: Path) -> dict[str, str]:
    with safe_open(path, framework="pt") as file:
        return {key: hashlib.sha256(file.get_tensor(key).contiguous().numpy().tobytes()).hexdigest()[:16]
                for key in sorted(file.keys())}


def distill(code: Path, output: Path, arguments: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    where = subprocess.run([sys.executable, "-P", "-c", "import latentdistill; print(latentdistill.__file__)"], env=env,
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(code)), f"{code} is not the revision that runs ({where})"
    started = time.perf_counter()
    # -P: the working directory (this checkout) must not shadow PYTHONPATH's revision
    subprocess.run([sys.executable, "-P", "-m", "latentdistill", "--no-progress", "distill", *arguments,
                    f"output_dir={output}"], cwd=REPO, env=env, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, type=Path, help="a checkout of the other revision")
    parser.add_argument("--work", type=Path, default=REPO / "outputs" / "same_bits", help="where the two runs go")
    parser.add_argument("arguments", nargs=argparse.REMAINDER, help="-- then the distill arguments (--config C k=v ...)")
    args = parser.parse_args()
    arguments = args.arguments[1:] if args.arguments[:1] == ["--"] else args.arguments
    seconds = {}
    for name, code in (("old", args.old.resolve()), ("new", REPO)):
        seconds[name] = distill(code, args.work / name, arguments)
    old, new = (digests(args.work / name / "distilled.safetensors") for name in ("old", "new"))
    differ = False
    for key in sorted(set(old) | set(new)):
        same = old.get(key) == new.get(key)
        differ |= not same
        print(f"{key}: old {old.get(key)} new {new.get(key)} {'equal' if same else 'DIFFERENT'}")
    print(f"seconds: old {seconds['old']:.0f}, new {seconds['new']:.0f}")
    return int(differ)


if __name__ == "__main__":
    sys.exit(main())
