"""Does ``compile: true`` pay for an evaluation on this machine? 5 ConvNet-3 trained one after another for 60
epochs on an IPC 10 CIFAR-10 set through ``train_classifiers`` (the evaluation's code), eager then compiled,
the compile of each network included in its time.

    python benchmarks/compile_check.py [--cache outputs/cache/cifar10-32px-taef2/train] [--epochs 60]
"""

import argparse
import dataclasses
import time

import torch

from latentdistill.config import AugmentConfig, EvaluateConfig
from latentdistill.data.latent_cache import LatentCache
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.classifier_training import ClassifierTraining
from latentdistill.evaluate.classification import train_classifiers
from latentdistill.runtime import Normalize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="outputs/cache/cifar10-32px-taef2/train")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args()
    cache = LatentCache.load(args.cache)
    chosen = torch.cat([torch.nonzero(cache.labels == c).flatten()[:10] for c in range(len(cache.classes))])
    normalize = Normalize([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010])
    augment = DifferentiableAugment(AugmentConfig())
    trainings = [ClassifierTraining(cache.images[chosen], cache.labels[chosen], len(cache.classes), normalize, augment,
                                    seed, torch.device("cpu")) for seed in range(5)]
    for compile_networks in (False, True):
        started = time.perf_counter()
        train_classifiers([dataclasses.replace(t, compile=compile_networks) for t in trainings],
                          EvaluateConfig(epochs=args.epochs), net="convnet")
        print(f"compile={compile_networks}: 5 ConvNet-3 x {args.epochs} epochs on {len(chosen)} images: "
              f"{time.perf_counter() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
