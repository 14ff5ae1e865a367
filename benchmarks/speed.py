"""The fast paths against the reference loops, timed in one run on the machine it runs on.

    python benchmarks/speed.py [--device cuda] [--ipcs 1 10 50] [--expert-images 0] [--eval-epochs 300]
        [--json results.json] [key=value ...]

Rows (each a ratio of two timings taken in this process, alternating so that neither always runs first):
- gm outer step at each IPC: one matching step (decode the synthetic latents with the autoencoder,
  every class's real and synthetic gradients, the distance, the backward to the latents), per-class
  loop (`distill.batched=false`) against `torch.func` vmap over classes (`true`);
- dm iteration at each IPC: per-class forwards against one forward for all classes;
- one expert epoch of 10 experts: `buffer.parallel=1` against `10` (`latentdistill buffer`'s own code,
  writing real expert files into a temporary folder);
- one evaluation row of 5 networks (IPC 10 set, `--eval-epochs`, then the test split): sequential against
  `evaluate.batched=true`.
CIFAR-10 from the config's data and autoencoder (defaults: ../shared, taef2), ConvNet-3 width 128, 256 real
images per class, precision as configured. `--expert-images` trains the experts on that many training images
(0: all; use a few thousand on a CPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import EvaluateConfig, load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.buffer import train_experts
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.distill.synthetic import initial_synthetic_set
from latentdistill.evaluate.classification import accuracy, train_classifiers
from latentdistill.runtime import resolve_device, set_threads
from latentdistill.tasks.classification import ClassificationTask, CrossEntropy


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def compare(name: str, reference, fast, device: torch.device, repeats: int, rows: list[dict], header: dict,
            path: Path | None) -> None:
    """Median seconds of ``reference`` and ``fast`` over ``repeats`` alternating calls, after one warm-up each
    (whose time is kept too: it holds a compile's cost)."""
    reference()
    first = timed(fast, device)
    times: dict[str, list[float]] = {"reference": [], "fast": []}
    for repeat in range(repeats):
        order = [("reference", reference), ("fast", fast)]
        for label, function in order if repeat % 2 else order[::-1]:
            times[label].append(timed(function, device))
    slow, quick = statistics.median(times["reference"]), statistics.median(times["fast"])
    row = {"row": name, "reference_s": round(slow, 4), "fast_s": round(quick, 4), "ratio": round(slow / quick, 2),
           "fast_first_call_s": round(first, 2)}
    print(f"| {name} | {slow:.4f} | {quick:.4f} | {slow / quick:.2f}x |", flush=True)
    rows.append(row)
    if path is not None:  # after every row, so a run killed at its time limit keeps what it measured
        path.write_text(json.dumps({**header, "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ipcs", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--expert-images", type=int, default=0)
    parser.add_argument("--eval-epochs", type=int, default=300)
    parser.add_argument("--skip", nargs="*", default=[], choices=["gm", "dm", "experts", "evaluation"])
    parser.add_argument("--compile", action="store_true", help="add a row: the evaluation row eager vs torch.compile")
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_intermixed_args()
    config = load_config(None, ["data.val_per_class=0", *args.overrides])
    set_threads(config.threads)
    device = resolve_device(args.device)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    task = ClassificationTask(config)
    data = task.prepare(autoencoder, device, progress=False)
    autoencoder = autoencoder.to(device)
    normalize = task.normalize().to(device)
    augment = DifferentiableAugment(config.augment)
    classes, resolution = len(data.classes), config.data.resolution
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()}, {torch.get_num_threads()} threads"
    print(f"speed on {name}, torch {torch.__version__}, precision {config.precision}, {time.strftime('%Y-%m-%d')}")
    print("| row | reference (s) | fast (s) | ratio |\n|---|---|---|---|", flush=True)
    rows: list[dict] = []
    header = {"device": name, "torch": torch.__version__, "precision": config.precision, "date": time.strftime("%Y-%m-%d")}
    real_by_class = {c: normalize(data.train.images[data.train.labels == c].to(device).float() / 255) for c in range(classes)}

    def matching_rows(objective_name: str, objective) -> None:
        for ipc in args.ipcs:
            start = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, classes, ipc,
                                          "random_real", 0)
            latents = start.latents.to(device).requires_grad_(True)
            labels = start.labels.to(device)
            stream = torch.Generator().manual_seed(ipc)

            def step(batched: bool) -> None:
                torch.manual_seed(0)
                net = nets.build("convnet", num_classes=classes, resolution=resolution).to(device)
                if objective_name == "dm":
                    net.requires_grad_(False)
                picks = {c: torch.randint(len(real_by_class[c]), (256,), generator=stream).to(device) for c in range(classes)}
                objective.batched = batched
                images = normalize(autoencoder.decode(latents))
                loss = objective.loss(net, {c: real_by_class[c][picks[c]] for c in range(classes)},
                                      {c: images[labels == c] for c in range(classes)}, augment.sample(classes, stream))
                latents.grad = None
                loss.backward()

            label = "gm outer step" if objective_name == "gm" else "dm iteration"
            compare(f"{label}, IPC {ipc}: per-class loop vs batched", lambda: step(False), lambda: step(True),
                    device, args.repeats, rows, header, args.json)

    if "gm" not in args.skip:
        matching_rows("gm", GradientMatching(augment, CrossEntropy(), config.precision))
    if "dm" not in args.skip:
        matching_rows("dm", DistributionMatching(augment, CrossEntropy(), config.precision))

    if "experts" not in args.skip:
        count = args.expert_images or len(data.train.labels)
        chosen = torch.randperm(len(data.train.labels), generator=torch.Generator().manual_seed(0))[:count]
        training = ClassifierTraining(data.train.images[chosen], data.train.labels[chosen], classes, normalize, augment,
                                      config.seed, device, config.precision)
        meta = {"net": "convnet", "width": 0, "depth": 0, "resolution": resolution, "experts": 10, "epochs": 1,
                "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "batch_size": 256}
        with tempfile.TemporaryDirectory() as folder:
            calls = iter(range(10**6))

            def experts(parallel: int) -> None:
                train_experts(training, Path(folder) / str(next(calls)), meta, progress=False, parallel=parallel)

            compare(f"one epoch of 10 experts on {count} images: sequential vs parallel=10", lambda: experts(1),
                    lambda: experts(10), device, max(1, args.repeats // 2), rows, header, args.json)

    if "evaluation" not in args.skip:
        protocol = EvaluateConfig(epochs=args.eval_epochs)
        chosen = torch.cat([torch.nonzero(data.train.labels == c).flatten()[:10] for c in range(classes)])
        trainings = [ClassifierTraining(data.train.images[chosen], data.train.labels[chosen], classes, normalize, augment,
                                        run, device, config.precision) for run in range(5)]

        def row(batched: bool, members: list[ClassifierTraining] = trainings) -> None:
            for model in train_classifiers(members, protocol, net="convnet", batched=batched):
                accuracy(model, data.test.images, data.test.labels, normalize, device, protocol.test_batch, config.precision)

        compare(f"evaluation row, 5 ConvNet-3 on IPC 10 for {args.eval_epochs} epochs + test: sequential vs batched",
                lambda: row(False), lambda: row(True), device, max(1, args.repeats // 2), rows, header, args.json)
        if args.compile:
            compiled = [dataclasses.replace(training, compile=True) for training in trainings]
            for batched in (False, True):
                compare(f"same row, {'batched' if batched else 'sequential'}: eager vs compile=true",
                        lambda b=batched: row(b), lambda b=batched: row(b, compiled), device, 1, rows, header, args.json)


if __name__ == "__main__":
    main()
