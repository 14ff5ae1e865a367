"""Plain helpers and constants shared by the test files; the fixtures built on them live in ``conftest.py``.

Test files import them with ``from helpers import ...``: there is no ``tests/__init__.py``, so pytest puts
``tests/`` on ``sys.path`` before it imports ``conftest.py`` and the test modules.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentdistill.autoencoders import TinyAutoencoderFamily

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"  # real data and weights, where a machine has them

# The tiny image folder: three classes of noisy flat-colour images.
CLASSES = ("class_a", "class_b", "class_c")
COLOURS = {"class_a": (220, 40, 40), "class_b": (40, 200, 60), "class_c": (50, 60, 230)}
TRAIN_PER_CLASS = 12
TEST_PER_CLASS = 4
RESOLUTION = 16


def write_image(path: Path, colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (RESOLUTION, RESOLUTION)) -> Path:
    """A flat class colour plus a little noise and a bright square, so images of one class differ."""
    rng = np.random.default_rng(seed)
    width, height = size
    array = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)
    x, y = rng.integers(0, max(1, width - 4)), rng.integers(0, max(1, height - 4))
    array[y : y + 4, x : x + 4] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, "RGB").save(path)
    return path


def make_image_folder(root: Path, train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS) -> Path:
    """``root/{train,test}/{class_a,class_b,class_c}/NNN.png``, 16x16 RGB, the same bytes on every call."""
    seed = 0
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in CLASSES:
            for index in range(count):
                write_image(root / split / name / f"{index:03d}.png", COLOURS[name], seed)
                seed += 1
    return root


def save_tiny_autoencoder(folder: Path) -> Path:
    """A random TAESD (4 latent channels, 8x downscale) saved as encoder/decoder safetensors files."""
    TinyAutoencoderFamily.random("taesd", seed=0).save_pretrained(folder)
    return folder


def make_tiny_base(base: Path) -> Path:
    """The inputs ``tiny_overrides`` points at: the image folder ``base/tinyset`` and ``base/autoencoder``."""
    make_image_folder(base / "tinyset")
    save_tiny_autoencoder(base / "autoencoder")
    return base


def tiny_overrides(base: Path, run_dir: Path, **distill) -> list[str]:
    """Config overrides for a short CPU run on ``make_tiny_base(base)``; keywords replace ``distill.*`` values."""
    values = {"iterations": 4, "real_batch": 4, "net_width": 16, "checkpoint_every": 2, **distill}
    return [
        f"data.root={base / 'tinyset'}",
        f"data.resolution={RESOLUTION}",
        "data.val_per_class=2",
        f"autoencoder.name_or_path={base / 'autoencoder'}",
        f"cache.dir={base / 'cache'}",
        f"output_dir={run_dir}",
        "device=cpu",
        "evaluate.epochs=2",
        "evaluate.runs=1",
        *[f"distill.{key}={value}" for key, value in values.items()],
    ]


def one_line(error: pytest.ExceptionInfo) -> str:
    """The message of a caught error, checked to be a single line."""
    message = str(error.value)
    assert "\n" not in message, message
    return message


# Tiny random denoisers for the tiny autoencoder's latents (4 channels, 2 x 2 at 16 px), saved in the
# layouts users download: a DiT pipeline folder, a bare UNet2DModel folder, a Stable Diffusion folder.
DENOISER_KINDS = ("dit", "unet", "sd")


def _save_scheduler(folder: Path, prediction_type: str = "epsilon") -> None:
    from diffusers import DDIMScheduler

    DDIMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type=prediction_type).save_pretrained(folder)


def _save_tiny_tokenizer(folder: Path) -> None:
    """A character-level CLIP tokenizer (every letter is a token), enough for "a photo of a class_a"."""
    import json

    from transformers import CLIPTokenizer

    symbols = list("abcdefghijklmnopqrstuvwxyz_0123456789")
    vocab = {token: index for index, token in enumerate(symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=32).save_pretrained(folder)


def save_tiny_denoiser(folder: Path, kind: str, seed: int = 0, num_classes: int = 3) -> Path:
    """A random denoiser of ``kind`` (dit | unet | sd) plus its scheduler, saved with ``save_pretrained``."""
    import torch
    from diffusers import DiTTransformer2DModel, UNet2DConditionModel, UNet2DModel

    torch.manual_seed(seed)
    if kind == "dit":
        DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
                              sample_size=2, patch_size=1, num_embeds_ada_norm=num_classes).save_pretrained(folder / "transformer")
        _save_scheduler(folder / "scheduler")
    elif kind == "unet":
        UNet2DModel(sample_size=2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                    norm_num_groups=4, num_class_embeds=num_classes).save_pretrained(folder)
        _save_scheduler(folder)  # a bare model folder with its scheduler_config.json beside it
    elif kind == "sd":
        from transformers import CLIPTextConfig, CLIPTextModel

        UNet2DConditionModel(sample_size=2, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
                             down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                             up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=4,
                             cross_attention_dim=16, attention_head_dim=2).save_pretrained(folder / "unet")
        text = CLIPTextConfig(vocab_size=76, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, max_position_embeddings=32, bos_token_id=74, eos_token_id=75, pad_token_id=75)
        CLIPTextModel(text).save_pretrained(folder / "text_encoder")
        _save_tiny_tokenizer(folder / "tokenizer")
        _save_scheduler(folder / "scheduler", prediction_type="v_prediction")
    else:
        raise ValueError(kind)
    return folder


def coloured_images(count_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images whose class is their dominant colour, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label in range(3):
        base = torch.full((count_per_class, 3, 16, 16), 60.0)
        base[:, label] = 200.0
        images.append((base + 40 * torch.randn(base.shape, generator=generator)).clamp(0, 255).to(torch.uint8))
        labels.append(torch.full((count_per_class,), label))
    return torch.cat(images), torch.cat(labels)
