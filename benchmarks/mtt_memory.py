"""Peak memory and time of one trajectory-matching (MTT) iteration against syn_steps, with the student's
steps checkpointed and not.

    python benchmarks/mtt_memory.py --config configs/cifar10_ipc1_mtt.yaml distill.ipc=10

One iteration: decode the synthetic latents (taef2) -> ``syn_steps`` unrolled SGD steps of a ConvNet-3
student from an expert checkpoint of the real buffer -> normalised distance to the expert's later
parameters -> backward to the latents and the learnable lr. Peak memory is that of the first iteration
of a fresh process, above what was resident before it: ``torch.cuda.max_memory_allocated`` on a GPU,
the process's peak resident set (VmHWM) on a CPU, each configuration in its own process; time is the
mean of the iterations after it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import load_buffer
from latentdistill.distill.objective import IterationContext
from latentdistill.distill.trajectory_matching import TrajectoryMatching
from latentdistill.runtime import Normalize, resolve_device, set_threads
from latentdistill.tasks.classification import ClassificationTask, CrossEntropy

from memory import peak_resident_bytes, reset_peak_resident, resident_bytes

STEPS = (10, 20, 40, 80)


def one_case(config_path: str, overrides: list[str], syn_steps: int, checkpointing: bool, iterations: int) -> dict:
    config = load_config(config_path, overrides)
    set_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(0)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind).to(device)
    buffer = load_buffer(ClassificationTask(config).buffer_directory())
    settings = config.distill
    augment = DifferentiableAugment(config.augment)
    objective = TrajectoryMatching(augment, CrossEntropy(), buffer, config.precision, syn_steps, settings.expert_epochs,
                                   settings.max_start_epoch, settings.syn_batch, settings.syn_lr,
                                   1 if checkpointing else 0)
    objective.synthetic_lr = objective.synthetic_lr.to(device).requires_grad_(True)
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    classes, ipc, resolution = 10, settings.ipc, config.data.resolution
    with torch.no_grad():
        shape = autoencoder.encode(torch.rand(1, 3, resolution, resolution, device=device)).shape[1:]
    latents = torch.randn(classes * ipc, *shape, device=device).requires_grad_(True)
    labels = torch.arange(classes, device=device).repeat_interleave(ipc)
    net = nets.build(settings.net, classes, resolution=resolution, width=settings.net_width, depth=settings.net_depth).to(device)

    def update(loss: torch.Tensor) -> float:
        loss.backward()
        return float(loss.detach())

    def generate() -> torch.Tensor:
        return normalize(autoencoder.decode(latents))

    def synthetic_batches(generator: torch.Generator) -> dict[int, torch.Tensor]:  # MTT itself calls generate
        images = generate()
        return {c: images[labels == c] for c in range(classes)}

    def iteration(seed: int) -> None:
        context = IterationContext(net, torch.Generator().manual_seed(seed), generate, lambda g: {}, synthetic_batches,
                                   update, labels, classes, device)
        objective.iteration(context)
        latents.grad = None

    # Memory: the first iteration, from a fresh process (a warm-up would leave its freed pages resident
    # on a CPU and hide the peak). Time: the iterations after it.
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = resident_bytes()
        reset_peak_resident()
    iteration(0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = peak_resident_bytes() - baseline
    started = time.perf_counter()
    for seed in range(1, iterations + 1):
        iteration(seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return {"seconds_per_iteration": round((time.perf_counter() - started) / iterations, 3),
            "peak_gb": round(peak / 1e9, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a run config with objective mtt and its buffer")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--iterations", type=int, default=1, help="timed iterations after the measured one")
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--one", nargs=2, type=int, metavar=("SYN_STEPS", "CHECKPOINTING"), help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_case(args.config, args.overrides, args.one[0], bool(args.one[1]), args.iterations)))
        return
    rows = []
    for steps in args.steps:
        for checkpointing in (False, True):
            command = [sys.executable, __file__, "--config", args.config, "--iterations", str(args.iterations),
                       "--one", str(steps), str(int(checkpointing)), *args.overrides]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                sys.exit(f"syn_steps={steps} checkpointing={checkpointing} failed:\n{done.stderr[-3000:]}")
            row = {"syn_steps": steps, "checkpointing": checkpointing, **json.loads(done.stdout.strip().splitlines()[-1])}
            print(json.dumps(row), flush=True)
            rows.append(row)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\ndevice: {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| syn_steps | peak GB, all steps kept | peak GB, checkpointed | s/iteration kept | s/iteration checkpointed |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        kept, ckpt = (next(r for r in rows if r["syn_steps"] == steps and r["checkpointing"] == c) for c in (False, True))
        print(f"| {steps} | {kept['peak_gb']:.2f} | {ckpt['peak_gb']:.2f} | {kept['seconds_per_iteration']:.2f} | {ckpt['seconds_per_iteration']:.2f} |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"device": device, "args": vars(args), "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
