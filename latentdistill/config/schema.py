"""The run config's schema: one typed dataclass per section, with the defaults and what each key means.

Loading, overriding and checking these live in ``latentdistill.config``; this module is only the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    root: str = "../shared/data/cifar10"
    train_split: str = "train"
    test_split: str = "test"
    resolution: int = 32
    # Validation images carved from train (per class, fixed seed); never used for distillation.
    val_per_class: int = 100
    split_seed: int = 0
    # Count and list unreadable images instead of stopping at the first one.
    skip_bad: bool = False
    # The per-channel statistics images are normalised with before every network: auto (computed from the
    # training split's images and kept beside its cache), a name (cifar10: the reference code's values;
    # cifar100, imagenet, unit) or 3 numbers. Names become their numbers when the config is read.
    mean: list[float] | str = "auto"
    std: list[float] | str = "auto"
    # ZCA whitening after the normalisation, before every network (real and synthetic images, experts,
    # evaluation), fitted once on the training split and kept with the latent cache (classification only).
    zca: bool = False
    zca_eps: float = 0.1  # added to the covariance's eigenvalues (MTT's kornia setting)


@dataclass
class AutoencoderConfig:
    # A local folder (TAESD-family weight files or a diffusers folder) or a hub id.
    name_or_path: str = "../shared/weights/taef2"
    # auto | taesd | kl | tiny, or pixels: no autoencoder, the latents are the images normalised with data.mean
    # and data.std (the pixel-space baseline; name_or_path is not read).
    kind: str = "auto"
    subfolder: str | None = None


@dataclass
class CacheConfig:
    # Where the latent cache lives; empty means $LATENTDISTILL_CACHE (default outputs/cache) /
    # <dataset>-<resolution>px-<autoencoder>, shared by every run that reads the same inputs.
    dir: str = ""
    shard_size: int = 10000
    batch_size: int = 500


@dataclass
class PriorConfig:
    name: str = "vae"  # vae (decode z as it is) | diffusion (LD3M: T denoising steps, then decode)
    # The rest is read by prior "diffusion" only.
    # A hub id or a local folder: a diffusers pipeline folder (transformer/ or unet/, scheduler/, and for
    # Stable Diffusion text_encoder/ and tokenizer/), one model folder, or a `latentdistill train-prior` output.
    denoiser: str = ""
    kind: str = "auto"  # auto | dit | unet (class-conditional UNet2DModel) | sd (UNet2DConditionModel + CLIP)
    denoising_steps: int = 10  # T, the DDIM steps (eta 0) from t_start down to the clean latent
    t_start: int = 300  # noise level the chain starts from, in training timesteps (0: no noise)
    residual: str = "x0"  # mean (LD3M paper) | x0 (LD3M code) | none (plain DDIM)
    guidance_scale: float = 1.0  # classifier-free guidance; 1 turns it off
    # Activation recomputation: the chain is split into segments of this many steps whose activations are
    # recomputed in the backward pass; 0 keeps every activation (fastest, memory grows with T).
    steps_per_recompute: int = 1
    # The model's class id for each dataset class, in the dataset's class order; empty: 0, 1, 2, ...
    class_ids: list[int] = field(default_factory=list)
    prompt: str = "a photo of a {class}"  # Stable Diffusion only
    # Seed of the fixed noise that q_sample adds to each synthetic latent (fixed, so an exported image
    # is exactly what the distillation optimised).
    noise_seed: int = 0


@dataclass
class AugmentConfig:
    # Differentiable siamese augmentation (DSA); "" or "none" disables it.
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    brightness: float = 1.0
    saturation: float = 2.0
    contrast: float = 0.5
    crop: float = 0.125
    cutout: float = 0.5
    scale: float = 1.2
    rotate: float = 15.0


@dataclass
class DistillConfig:
    objective: str = "gm"
    ipc: int = 1
    iterations: int = 1000
    init: str = "random_real"
    # The network the objective matches through, by registry name; width/depth 0: its default
    # (convnet: width 128, depth 3 at 32x32, one more per doubling of the resolution).
    net: str = "convnet"
    net_width: int = 0
    net_depth: int = 0
    # Real images per class in one matching step.
    real_batch: int = 256
    # DC's loops: matching steps on one network (outer) and its training on the synthetic set (inner).
    # 0 picks DC's table by IPC.
    outer_loop: int = 0
    inner_loop: int = 0
    # All classes in one batched computation (gm: torch.func vmap of per-class gradients; dm: one forward
    # for every class) instead of a Python loop over classes. auto: batched on CUDA, the per-class loop on
    # a CPU, where it is faster (BENCHMARKS.md). Networks with batch norm always take the per-class loop.
    batched: bool | str = "auto"
    inner_lr: float = 0.01
    inner_batch: int = 256
    # Which networks gm and pm match on: fresh (DC: a new initialisation each iteration) or experts (a random
    # expert of buffer.dir at a random epoch in [min_start_epoch, max_start_epoch), as trained on the real
    # data: late, trained networks see what a set must teach near convergence, not at the start).
    matching_nets: str = "fresh"
    optimizer: str = "sgd"  # sgd | adam
    lr: float = 0.1
    # Decode the synthetic latents in chunks of this many under activation recomputation (for large
    # decoders such as the SD VAE at 256 px); 0 decodes them at once and keeps every activation.
    decode_chunk: int = 0
    # Learning rate of the conditioning embeddings (prior "diffusion"); 0 keeps them fixed.
    embedding_lr: float = 0.01
    momentum: float = 0.5
    checkpoint_every: int = 50
    # Also export the set every this many iterations, as snapshots/iteration-NNNNNN.safetensors in output_dir (a
    # distilled file each, for an accuracy-vs-iteration curve; judge them on validation data); 0: none.
    snapshot_every: int = 0
    # Objective "mtt" (the expert buffer is buffer.dir): the student takes syn_steps steps on the synthetic
    # set from a random expert's epoch in [min_start_epoch, max_start_epoch) and should land expert_epochs later.
    # (gm with matching_nets=experts draws its networks from the same window.)
    syn_steps: int = 20
    expert_epochs: int = 2
    min_start_epoch: int = 0
    max_start_epoch: int = 10
    # DATM's difficulty window: the upper bound grows linearly from max_start_epoch to max_start_epoch_final
    # over the first window_iterations iterations (0: all of them), so the set first matches the early, easy
    # trajectories and later ones as it improves. 0: the window stays fixed.
    max_start_epoch_final: int = 0
    window_iterations: int = 0
    # DATM's learned soft labels (objective mtt): logits per synthetic image, started from the buffer's experts
    # (mean logits at their last epoch) on starting images they classify correctly, optimised with label_lr;
    # the student trains on their softmax, and the export holds them as soft_labels (probabilities).
    learn_labels: bool = False
    label_lr: float = 0.01
    # Fill the bytes of storage_ipc uint8 images per class with as many latents (stored in fp16) as fit,
    # soft labels counted; it replaces ipc. 0: ipc latents per class.
    storage_ipc: int = 0
    syn_batch: int = 0  # synthetic images per student step; 0: all of them
    syn_lr: float = 0.01  # the student's starting learning rate, learned with the images
    syn_lr_lr: float = 1e-5  # learning rate of that learning rate
    # Recompute each segment of this many student steps in the backward pass; 0 keeps every step's activations.
    syn_steps_per_recompute: int = 0


@dataclass
class BufferConfig:
    """`latentdistill buffer`: expert trajectories on the real data for objective "mtt" (and gm/pm with
    distill.matching_nets=experts).

    Classification experts are distill.net / net_width / net_depth, trained by the SGD keys below; task sr's are
    sr.net, trained as its protocol trains (Adam at its lr and batch), so only dir, experts and epochs apply."""

    # Where the buffer lives; empty: outputs/buffers/<dataset>-<resolution>px-<net>.
    dir: str = ""
    experts: int = 5
    epochs: int = 20
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    augment: bool = True  # DSA on the real images, as MTT trains its experts
    # Experts trained at once as one batched model (torch.func vmap), each with its own seed, data order and
    # augmentation; the files are those of one-by-one training up to floating-point rounding. 1: one at a time.
    parallel: int = 1


@dataclass
class EvaluateConfig:
    net: str = "convnet"
    # Several networks, one row each (the cross-architecture table); empty: just `net`.
    nets: list[str] = field(default_factory=list)
    runs: int = 5
    epochs: int = 300
    # The networks' learning rate, or "learned": the student learning rate the distillation learned (MTT),
    # read from the file, for every row of the evaluation alike.
    lr: float | str = 0.01
    # hard: cross-entropy on the class labels. soft: also the rows trained on soft labels (soft cross-entropy
    # to the file's soft_labels; the random real row to a teacher's, the experts of buffer.dir), beside the
    # hard-label rows, so the label gain and the data gain are told apart.
    labels: str = "hard"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 256
    augment: bool = True
    # The runs of one row (a network on one set) train together as one batched model (ConvNet family and any
    # network without batch norm), each with its own seed, data order and augmentation. auto: on CUDA only.
    batched: bool | str = "auto"
    # The random real subset of the same IPC, trained with the same protocol in the same run.
    random_real: bool = True
    # The full training set (minus validation) with the same protocol for full_epochs: DD-Ranking's
    # label-robust score needs it.
    full_data: bool = False
    full_epochs: int = 30
    # Also train every set without augmentation: DD-Ranking's augmentation-robust score needs it.
    without_augment: bool = False
    # Keep the baseline accuracies (random real, full data) beside the latent cache and reuse them in
    # later evaluations with the same data, protocol, network and seed (delete baselines.json there, or
    # set false, after changing a network's code).
    reuse_baselines: bool = True
    score_weight: float = 0.5  # w of the label-robust score
    score_gamma: float = 0.5  # gamma of the augmentation-robust score
    test_batch: int = 1000


@dataclass
class SuperResolutionConfig:
    """Task "sr": distil a super-resolution training set (HR patches) and train SR networks on it."""

    train: list[str] = field(default_factory=lambda: ["../shared/data/sr/yang91", "../shared/data/sr/bsd200"])
    test: list[str] = field(default_factory=lambda: ["../shared/data/sr/set5", "../shared/data/sr/bsd100"])
    scale: int = 2  # 2 | 3 | 4
    # HR patches of the training set: a multiple of the scale and of the autoencoder's 8x downscale.
    patch_size: int = 48
    stride: int = 48
    # The distilled set's size as a fraction of the training patches.
    budget: float = 0.1
    # The real patches the distillation starts from and matches against, as a fraction of the training
    # patches chosen by loss-based pruning (below: the hardest prune_drop dropped, the next hardest kept), as
    # in Moser et al.'s "distill the best, ignore the rest"; 1.0 uses every patch. At least the budget.
    pool: float = 1.0
    pseudo_classes: int = 10  # k of the k-means over real patch latents that stands in for classes
    synthetic_batch: int = 32  # synthetic patches decoded per matching step (a class's share, at most)
    # The SR training protocol (every training set alike): L1 on (net(LR), HR), Adam, random flips and
    # 90-degree rotations, lr x0.5 at 1/2 and 3/4 of the iterations. `protocol` names one of SR_PROTOCOLS
    # (quick | espcn-converged | converged); a number for iterations, batch_size or lr overrides that protocol's, and the
    # reports then name it as "<protocol>, modified".
    net: str = "espcn"
    protocol: str = "quick"
    iterations: int | str = "protocol"
    batch_size: int | str = "protocol"
    lr: float | str = "protocol"
    runs: int = 3
    augment: bool = True
    # Baselines trained in the same evaluation: the full set, a random subset and a loss-pruned subset of the
    # distilled set's size (an SRCNN trained on the full set ranks patches by loss; the hardest prune_drop are
    # dropped and the next hardest kept), and bicubic.
    baselines: list[str] = field(default_factory=lambda: ["full", "random", "pruned", "bicubic"])
    prune_drop: float = 0.05


@dataclass
class TrainPriorConfig:
    """`latentdistill train-prior`: a small class-conditional latent diffusion model on a latent cache."""

    architecture: str = "dit"  # dit (DiTTransformer2DModel) | unet (UNet2DModel)
    width: int = 256  # DiT hidden size; UNet base channels
    depth: int = 6  # DiT blocks; UNet layers per resolution level
    heads: int = 4  # DiT attention heads
    patch_size: int = 1  # DiT patch size in latent pixels
    steps: int = 6000
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.0
    ema_decay: float = 0.999  # the saved model is the EMA of the weights
    class_dropout: float = 0.1  # labels dropped to the null class, for classifier-free guidance
    train_timesteps: int = 1000
    beta_schedule: str = "linear"  # linear | scaled_linear | squaredcos_cap_v2
    checkpoint_every: int = 500


@dataclass
class RunConfig:
    output_dir: str = "outputs/run"
    # Modules to import before the run is built: your own registered networks, objectives, priors or tasks.
    imports: list[str] = field(default_factory=list)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # Torch threads on the CPU; 0 leaves torch's default.
    threads: int = 0
    # fp32, or bf16 autocast for the network passes of distillation and evaluation (about 2x faster
    # on CPUs with AVX512-BF16 and on GPUs); latents, parameters and distances stay float32.
    precision: str = "fp32"
    # torch.compile the networks that train for many epochs (evaluation networks, experts), one at a time or
    # stacked. Off by default: a first compile takes tens of seconds, and pays only over long trainings on a
    # GPU, where small kernels are launch-bound (BENCHMARKS.md).
    compile: bool = False
    # Experiment trackers for the distillation's loss (accelerate's: tensorboard, wandb, mlflow, aim, ...), none
    # by default; distill_log.jsonl is always written. They log into <output_dir>/trackers where they keep files.
    log_with: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    train_prior: TrainPriorConfig = field(default_factory=TrainPriorConfig)
    task: str = "classification"  # classification | sr
    sr: SuperResolutionConfig = field(default_factory=SuperResolutionConfig)
