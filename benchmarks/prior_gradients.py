"""How the gradient reaching z changes with the chain length T, with and without LD3M's residual.

    python benchmarks/prior_gradients.py --config configs/cifar10_ipc1_diffusion.yaml

LD3M (Table 1) reports the gradient norm of z falling from 58.1e-4 at T=10 to 6.5e-4 at T=90 without
the residual. Here: the config's synthetic start (real CIFAR-10 latents, IPC from the config), the
trained prior, one gradient-matching loss exactly as in a distillation step (fresh ConvNet, a real batch
per class, one DSA draw), and the L2 norm of d loss / d z, averaged over a few network draws. Every row
uses the same networks, real batches and augmentation draws. The loss's scale is ours (summed over
layers and classes), so compare the trend over T (printed as a ratio to the shortest chain), not the
absolute values, with LD3M's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.distill.synthetic import initial_synthetic_set
from latentdistill.priors import build_prior
from latentdistill.runtime import Normalize, set_threads
from latentdistill.tasks.classification import ClassificationTask, CrossEntropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 40, 90])
    parser.add_argument("--residuals", nargs="+", default=["none", "x0", "mean"])
    parser.add_argument("--t-starts", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--draws", type=int, default=3, help="network / real batch / DSA draws averaged")
    parser.add_argument("--output")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    set_threads(config.threads)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    data = ClassificationTask(config).prepare(autoencoder, torch.device("cpu"), progress=False)
    classes = len(data.classes)
    synthetic = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, classes,
                                      config.distill.ipc, "random_real", config.seed)
    normalize = Normalize(config.data.mean, config.data.std)
    augment = DifferentiableAugment(config.augment)
    objective = GradientMatching(augment, CrossEntropy(), precision=config.precision)
    draws = []
    for draw in range(args.draws):
        generator = torch.Generator().manual_seed(draw)
        real = {}
        for label in range(classes):
            rows = data.train_rows[data.train.labels[data.train_rows] == label]
            picks = rows[torch.randint(len(rows), (config.distill.real_batch,), generator=generator)]
            real[label] = normalize(data.train.images[picks].float() / 255)
        torch.manual_seed(draw)
        net = nets.build(config.distill.net, num_classes=classes, resolution=config.data.resolution,
                         width=config.distill.net_width, depth=config.distill.net_depth)
        draws.append((net, real, augment.sample(classes, generator)))

    rows = []
    started = time.perf_counter()
    for t_start in args.t_starts:
        for residual in args.residuals:
            for steps in args.steps:
                overrides = {"steps": steps, "residual": residual, "t_start": t_start}
                prior_config = type(config.prior)(**{**vars(config.prior), "denoising_steps": steps,
                                                     "residual": residual, "t_start": t_start})
                prior = build_prior(prior_config, data.classes, config.precision)
                conditioning = prior.initial_conditioning(synthetic.labels)
                norms = []
                for net, real, params in draws:
                    latents = synthetic.latents.clone().requires_grad_(True)
                    images = normalize(autoencoder.decode(prior(latents, conditioning)))
                    synthetic_by_class = {c: images[synthetic.labels == c] for c in range(classes)}
                    objective.loss(net, real, synthetic_by_class, params).backward()
                    norms.append(float(latents.grad.norm()))
                row = {**overrides, "z_grad_norm": statistics.mean(norms), "std": statistics.pstdev(norms)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    print(f"\nCPU ({os.cpu_count()} cores), {time.strftime('%Y-%m-%d')}, {time.perf_counter() - started:.0f} s")
    print("| t_start | residual | " + " | ".join(f"T={s}" for s in args.steps) + " |")
    print("|---|---|" + "---|" * len(args.steps))
    for t_start in args.t_starts:
        for residual in args.residuals:
            values = [r["z_grad_norm"] for r in rows if r["t_start"] == t_start and r["residual"] == residual]
            print(f"| {t_start} | {residual} | " + " | ".join(f"{v:.3g} ({v / values[0]:.2f}x)" for v in values) + " |")
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"config": args.config, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
