"""Speed of one gradient-matching iteration: the reference-style loop against latentdistill's.

    python benchmarks/gm_speed.py --config configs/cifar10_ipc10.yaml [--iterations 5]

Baseline (as the DC/GLaD scripts do it): per class, gather the real batch from uint8 images and
normalise it, decode that class's latents on their own, run the network in float32; one backward
over the summed distance.
latentdistill: real images normalised once and kept, all latents decoded in one batch, network passes
under the configured precision. Same network, same real batch size, same DSA draw; both are timed
in this one process, alternating, and the ratio is printed.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from latentdistill import nets
from latentdistill.autoencoders import load_autoencoder
from latentdistill.config import load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.gradient_matching import GradientMatching, gradient_distance
from latentdistill.distill.synthetic import initial_synthetic_set
from latentdistill.runtime import Normalize, set_threads
from latentdistill.tasks.classification import ClassificationTask, CrossEntropy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    set_threads(config.threads)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder)
    data = ClassificationTask(config).prepare(autoencoder, torch.device("cpu"), progress=False)
    classes = len(data.classes)
    settings = config.distill
    normalize = Normalize(config.data.mean, config.data.std)
    augment = DifferentiableAugment(config.augment)
    synthetic = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, classes, settings.ipc, "random_real", 0)
    latents = synthetic.latents.clone().requires_grad_(True)
    rows_by_class = {c: data.train_rows[data.train.labels[data.train_rows] == c] for c in range(classes)}
    real_by_class = {c: normalize(data.train.images[rows_by_class[c]].float() / 255) for c in range(classes)}
    objective = GradientMatching(augment, CrossEntropy(), precision=config.precision)

    def baseline(net, picks, params):
        total = latents.new_zeros(())
        for c in range(classes):
            real = normalize(data.train.images[rows_by_class[c][picks[c]]].float() / 255)
            syn = normalize(autoencoder.decode(latents[synthetic.labels == c]))
            real = augment.apply(real, params.index(torch.full((len(real),), c)))
            syn = augment.apply(syn, params.index(torch.full((len(syn),), c)))
            weights = list(net.parameters())
            target = torch.full((len(real),), c)
            g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), target), weights)]
            target = torch.full((len(syn),), c)
            g_syn = torch.autograd.grad(F.cross_entropy(net(syn), target), weights, create_graph=True)
            total = total + gradient_distance(g_real, g_syn)
        total.backward()
        return float(total.detach())

    def ours(net, picks, params):
        images = normalize(autoencoder.decode(latents))
        synthetic_by_class = {c: images[synthetic.labels == c] for c in range(classes)}
        loss = objective.loss(net, {c: real_by_class[c][picks[c]] for c in range(classes)}, synthetic_by_class, params)
        loss.backward()
        return float(loss.detach())

    times = {"baseline": [], "latentdistill": []}
    for iteration in range(args.iterations + 1):
        torch.manual_seed(iteration)
        net = nets.build(settings.net, num_classes=classes, resolution=config.data.resolution, width=settings.net_width, depth=settings.net_depth)
        picks = {c: torch.randint(len(rows_by_class[c]), (settings.real_batch,)) for c in range(classes)}
        params = augment.sample(classes)
        order = (("baseline", baseline), ("latentdistill", ours))
        for name, step in order if iteration % 2 else order[::-1]:  # alternate, so neither always runs first
            latents.grad = None
            started = time.perf_counter()
            step(net, picks, params)
            if iteration:  # the first iteration warms up
                times[name].append(time.perf_counter() - started)
    base, fast = statistics.median(times["baseline"]), statistics.median(times["latentdistill"])
    print(json.dumps({
        "ipc": settings.ipc, "real_batch": settings.real_batch, "precision": config.precision,
        "threads": torch.get_num_threads(), "iterations": args.iterations,
        "baseline_seconds": round(base, 3), "latentdistill_seconds": round(fast, 3), "speedup": round(base / fast, 2),
    }))


if __name__ == "__main__":
    main()
