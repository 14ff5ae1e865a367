"""Peak memory and time of one distillation iteration through prior "diffusion", by T, checkpointing on and off.

    # on this machine, with the trained CIFAR-10 prior, taef2 and real CIFAR-10 images:
    python benchmarks/prior_memory.py --scale cifar --config configs/cifar10_ipc10_diffusion.yaml
    # on a GPU, DiT-XL/2-256 + the SD VAE at 256 px with random weights (memory and time do not depend
    # on the weight values, so no hub download is needed):
    python benchmarks/prior_memory.py --scale dit-xl --ipc 1

One iteration is one matching step of the distillation loop: z, c -> T denoising steps -> decode ->
gradient matching on a fresh ConvNet against a real batch per class -> backward to z and c. Peak
memory is measured above what was resident before the iteration: on a GPU from
``torch.cuda.max_memory_allocated``; on a CPU from the process's peak resident set (VmHWM), each
configuration in its own process so that one run's freed memory cannot hide the next one's peak.
Every configuration's figures come from the same run of this script.
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
from latentdistill.config import AugmentConfig, load_config
from latentdistill.distill.augment import DifferentiableAugment
from latentdistill.distill.gradient_matching import GradientMatching
from latentdistill.runtime import Normalize, resolve_device, set_threads
from latentdistill.tasks.classification import CrossEntropy

from memory import peak_resident_bytes, reset_peak_resident, resident_bytes

STEPS = (10, 20, 40)


def measure(prior, autoencoder, net, objective, real_by_class, latents, conditioning, labels, normalize,
            iterations: int, device: torch.device, decode_chunk: int = 0) -> dict:
    """Seconds per iteration (after one warm-up) and the peak memory of an iteration above the baseline."""
    latents = latents.clone().requires_grad_(True)
    conditioning = conditioning.clone().requires_grad_(True)
    generator = torch.Generator().manual_seed(0)
    cuda = device.type == "cuda"
    times = []
    for index in range(iterations + 1):
        latents.grad = conditioning.grad = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            baseline = torch.cuda.memory_allocated()
        elif index == 0:
            reset_peak_resident()
            baseline = resident_bytes()
        started = time.perf_counter()
        images = normalize(autoencoder.decode_recomputed(prior(latents, conditioning), decode_chunk))
        params = objective.augment.sample(len(real_by_class), generator)
        loss = objective.loss(net, real_by_class, {c: images[labels == c] for c in real_by_class}, params)
        loss.backward()
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - started
        if index == 0:
            peak = (torch.cuda.max_memory_allocated() if cuda else peak_resident_bytes()) - baseline
        else:
            times.append(elapsed)
    gradient = float(latents.grad.norm())
    return {"seconds": sum(times) / len(times), "peak_gb": peak / 1e9, "z_grad_norm": gradient}


def cifar_case(args, steps: int, checkpointing: bool) -> dict:
    """The trained CIFAR-10 prior and taef2, real CIFAR-10 images, the config's IPC and real batch."""
    from latentdistill.autoencoders import load_autoencoder
    from latentdistill.distill.synthetic import initial_synthetic_set
    from latentdistill.priors import build_prior
    from latentdistill.tasks.classification import ClassificationTask

    config = load_config(args.config, [f"prior.denoising_steps={steps}", f"prior.steps_per_recompute={1 if checkpointing else 0}"])
    set_threads(config.threads)
    device = resolve_device(config.device)
    autoencoder = load_autoencoder(config.autoencoder.name_or_path, config.autoencoder.kind, config.autoencoder.subfolder).to(device)
    data = ClassificationTask(config).prepare(autoencoder, device, progress=False)
    classes = len(data.classes)
    prior = build_prior(config.prior, data.classes, config.precision).to(device)
    synthetic = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, classes,
                                      config.distill.ipc, "random_real", config.seed)
    conditioning = prior.initial_conditioning(synthetic.labels)
    normalize = Normalize(config.data.mean, config.data.std).to(device)
    generator = torch.Generator().manual_seed(0)
    real_by_class = {}
    for label in range(classes):
        rows = data.train_rows[data.train.labels[data.train_rows] == label]
        picks = rows[torch.randint(len(rows), (config.distill.real_batch,), generator=generator)]
        real_by_class[label] = normalize(data.train.images[picks].to(device).float() / 255)
    del data
    torch.manual_seed(0)
    net = nets.build(config.distill.net, num_classes=classes, resolution=config.data.resolution,
                     width=config.distill.net_width, depth=config.distill.net_depth).to(device)
    objective = GradientMatching(DifferentiableAugment(config.augment), CrossEntropy(), precision=config.precision)
    return measure(prior, autoencoder, net, objective, real_by_class, synthetic.latents.to(device),
                   conditioning.to(device), synthetic.labels.to(device), normalize, args.iterations, device,
                   config.distill.decode_chunk)


def dit_xl_parts(args, device: torch.device):
    """DiT-XL/2-256 and the SD VAE as the hub ships them (configs only; random weights, built on the device)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTTransformer2DModel

    from latentdistill.autoencoders.diffusers_models import KLAutoencoder
    from latentdistill.priors.denoisers import DiTDenoiser
    from latentdistill.priors.diffusion import DiffusionPrior

    torch.manual_seed(0)
    with device:
        transformer = DiTTransformer2DModel(
            num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8, num_layers=args.dit_layers,
            sample_size=args.resolution // 8, patch_size=2, num_embeds_ada_norm=1000,
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
            sample_size=args.resolution, scaling_factor=0.18215,
        )
    autoencoder = KLAutoencoder(vae, name_or_path="stabilityai/sd-vae-ft-mse (config, random weights)")
    schedule = DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    denoiser = DiTDenoiser(transformer, "facebook/DiT-XL-2-256 (config, random weights)")

    def prior_for(steps: int, checkpointing: bool):
        return DiffusionPrior(denoiser, schedule.alphas_cumprod, steps=steps, t_start=args.t_start, residual="x0",
                              steps_per_recompute=1 if checkpointing else 0, precision=args.precision).to(device)

    return prior_for, autoencoder


def dit_xl_cases(args) -> list[dict]:
    device = resolve_device("auto")
    prior_for, autoencoder = dit_xl_parts(args, device)
    classes = 10
    labels = torch.arange(classes).repeat_interleave(args.ipc).to(device)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(len(labels), 4, args.resolution // 8, args.resolution // 8, generator=generator).to(device)
    normalize = Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]).to(device)
    real_by_class = {c: torch.randn(args.real_batch, 3, args.resolution, args.resolution, generator=generator).to(device)
                     for c in range(classes)}
    torch.manual_seed(0)
    net = nets.build("convnet", num_classes=classes, resolution=args.resolution, width=128, depth=args.net_depth).to(device)
    objective = GradientMatching(DifferentiableAugment(AugmentConfig()), CrossEntropy(), precision=args.precision)
    results = []
    for steps in args.steps:
        for checkpointing in settings(args.checkpointing):
            prior = prior_for(steps, checkpointing)
            conditioning = prior.initial_conditioning(labels.cpu()).to(device)
            row = {"steps": steps, "checkpointing": checkpointing, "ipc": args.ipc, "decode_chunk": args.decode_chunk,
                   "precision": args.precision}
            try:
                row.update(measure(prior, autoencoder, net, objective, real_by_class, latents, conditioning, labels,
                                   normalize, args.iterations, device, args.decode_chunk))
            except torch.OutOfMemoryError:
                row.update({"seconds": None, "peak_gb": None, "error": "out of memory"})
            torch.cuda.empty_cache() if device.type == "cuda" else None
            print(json.dumps(row), flush=True)
            results.append(row)
    return results


def settings(choice: str) -> tuple[bool, ...]:
    return {"both": (True, False), "on": (True,), "off": (False,)}[choice]


def table(rows: list[dict]) -> str:
    lines = ["| T | checkpointing | peak memory (GB) | s / iteration | peak vs T=10 (same setting) |", "|---|---|---|---|---|"]
    reference = {r["checkpointing"]: r["peak_gb"] for r in rows if r["steps"] == min(x["steps"] for x in rows) and r.get("peak_gb")}
    for r in rows:
        if r.get("peak_gb") is None:
            lines.append(f"| {r['steps']} | {'on' if r['checkpointing'] else 'off'} | {r.get('error')} | - | - |")
            continue
        ratio = r["peak_gb"] / reference[r["checkpointing"]] if reference.get(r["checkpointing"]) else float("nan")
        lines.append(f"| {r['steps']} | {'on' if r['checkpointing'] else 'off'} | {r['peak_gb']:.2f} | {r['seconds']:.2f} | {ratio:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("cifar", "dit-xl"), required=True)
    parser.add_argument("--config", help="run config with prior.name=diffusion (scale cifar)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations after one warm-up")
    parser.add_argument("--ipc", type=int, default=1, help="images per class (scale dit-xl; cifar reads the config)")
    parser.add_argument("--real-batch", type=int, default=64, help="real images per class (scale dit-xl)")
    parser.add_argument("--resolution", type=int, default=256, help="(scale dit-xl)")
    parser.add_argument("--dit-layers", type=int, default=28, help="28 is DiT-XL (scale dit-xl)")
    parser.add_argument("--net-depth", type=int, default=6, help="ConvNet depth (scale dit-xl)")
    parser.add_argument("--t-start", type=int, default=1000, help="(scale dit-xl)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="(scale dit-xl)")
    parser.add_argument("--decode-chunk", type=int, default=0, help="checkpointed decode in chunks of this many (scale dit-xl)")
    parser.add_argument("--checkpointing", choices=("both", "on", "off"), default="both")
    parser.add_argument("--output", help="write the rows as JSON here")
    parser.add_argument("--one", nargs=2, type=int, metavar=("STEPS", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:  # a single CPU configuration in its own process
        print(json.dumps(cifar_case(args, args.one[0], bool(args.one[1]))))
        return
    if args.scale == "dit-xl":
        rows = dit_xl_cases(args)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    else:
        if not args.config:
            parser.error("--scale cifar needs --config")
        rows = []
        for steps in args.steps:
            for checkpointing in settings(args.checkpointing):
                command = [sys.executable, __file__, "--scale", "cifar", "--config", args.config,
                           "--iterations", str(args.iterations), "--one", str(steps), str(int(checkpointing))]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"configuration T={steps} checkpointing={checkpointing} failed:\n{done.stderr[-3000:]}")
                row = {"steps": steps, "checkpointing": checkpointing, **json.loads(done.stdout.strip().splitlines()[-1])}
                print(json.dumps(row), flush=True)
                rows.append(row)
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"\ndevice: {device}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(table(rows))
    if args.output:
        with open(args.output, "w") as file:
            json.dump({"device": device, "args": vars(args), "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
