import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, AutoencoderTiny
from PIL import Image
from safetensors.torch import load_file, save_file

from latentdistill.autoencoders import (
    Autoencoder,
    TinyAutoencoderFamily,
    load_autoencoder,
)
from latentdistill.errors import LatentDistillError

from helpers import SHARED, save_tiny_autoencoder


def tiny_kl() -> AutoencoderKL:
    """Four down blocks give the SD VAE's 8x downscale; a non-trivial scale and shift test the conversion."""
    torch.manual_seed(0)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.5,
        shift_factor=0.1,
    )


def tiny_taesd_diffusers() -> AutoencoderTiny:
    torch.manual_seed(0)
    return AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )


def check_interface(autoencoder: Autoencoder, size: int = 32) -> None:
    """What every caller relies on: shapes, [0, 1] output, gradients to latents, frozen weights, a JSON spec."""
    images = torch.rand(2, 3, size, size)
    with torch.no_grad():
        latents = autoencoder.encode(images)
    assert latents.shape == (2, autoencoder.latent_channels, size // 8, size // 8)
    assert autoencoder.downscale == 8

    latents = latents.clone().requires_grad_(True)
    decoded = autoencoder.decode(latents)
    assert decoded.shape == images.shape
    assert decoded.min() >= 0 and decoded.max() <= 1
    decoded.mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0

    assert not autoencoder.training
    assert not any(parameter.requires_grad for parameter in autoencoder.parameters())
    spec = json.loads(json.dumps(autoencoder.spec()))
    assert spec["latent_channels"] == autoencoder.latent_channels
    assert spec["scaling_factor"] == autoencoder.scaling_factor

    batched = autoencoder.encode_batched(images, batch_size=1)
    assert batched.dtype == torch.float32 and batched.device.type == "cpu"
    torch.testing.assert_close(batched, latents.detach())
    assert autoencoder.decode_batched(batched, batch_size=1).shape == images.shape


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    """diffusers fills missing tensors with random weights and only warns; a random autoencoder is refused."""
    tiny_kl().save_pretrained(tmp_path / "kl")
    weights = tmp_path / "kl" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if not k.startswith("decoder.conv_in")}, weights)
    with one_line_error(r"could not load AutoencoderKL from .*kl: the weights file does not match its config\.json"):
        load_autoencoder(str(tmp_path / "kl"))


def test_kl_autoencoder_from_local_folder(tmp_path):
    model = tiny_kl()
    model.save_pretrained(tmp_path)
    autoencoder = load_autoencoder(str(tmp_path))
    assert autoencoder.spec()["kind"] == "kl"
    assert autoencoder.scaling_factor == 0.5
    check_interface(autoencoder)

    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = (model.encode(images * 2 - 1).latent_dist.mode() - 0.1) * 0.5
        torch.testing.assert_close(autoencoder.encode(images), expected)
        expected_images = ((model.decode(expected / 0.5 + 0.1).sample + 1) / 2).clamp(0, 1)
        torch.testing.assert_close(autoencoder.decode(expected), expected_images)


def test_tiny_diffusers_autoencoder_from_subfolder(tmp_path):
    tiny_taesd_diffusers().save_pretrained(tmp_path / "vae")
    autoencoder = load_autoencoder(str(tmp_path), subfolder="vae")
    assert autoencoder.spec() == {
        "kind": "tiny",
        "name_or_path": str(tmp_path),
        "subfolder": "vae",
        "variant": None,
        "latent_channels": 4,
        "scaling_factor": 1.0,
    }
    check_interface(autoencoder)


@pytest.mark.parametrize("variant, latent_channels", [("taesd", 4), ("taef1", 16), ("taef2", 32)])
def test_taesd_family_round_trip(tmp_path, variant, latent_channels):
    original = TinyAutoencoderFamily.random(variant, seed=0)
    original.save_pretrained(tmp_path)
    loaded = load_autoencoder(str(tmp_path))
    assert isinstance(loaded, TinyAutoencoderFamily)
    assert (loaded.variant, loaded.latent_channels) == (variant, latent_channels)
    assert (any("pool" in name for name in load_file(tmp_path / "encoder.safetensors"))) == (variant == "taef2")
    check_interface(loaded, size=16)

    images, latents = torch.rand(2, 3, 16, 16), torch.randn(2, latent_channels, 2, 2)
    with torch.no_grad():
        assert torch.equal(loaded.encode(images), original.encode(images))
        assert torch.equal(loaded.decode(latents), original.decode(latents))


def test_taesd_family_reads_float16_pth_files(tmp_path):
    original = TinyAutoencoderFamily.random("taesd", seed=1)
    for part in ("encoder", "decoder"):
        state = getattr(original, part).state_dict()
        torch.save({name: tensor.half() for name, tensor in state.items()}, tmp_path / f"taesd_{part}.pth")
    loaded = load_autoencoder(str(tmp_path), kind="taesd")
    assert all(parameter.dtype == torch.float32 for parameter in loaded.parameters())
    torch.testing.assert_close(loaded.encoder[0].weight, original.encoder[0].weight, atol=1e-3, rtol=1e-3)


def test_random_is_reproducible_and_leaves_global_seed_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = TinyAutoencoderFamily.random("taesd", seed=5)
    assert torch.equal(torch.rand(1), before)
    second = TinyAutoencoderFamily.random("taesd", seed=5)
    assert torch.equal(first.decoder[19].weight, second.decoder[19].weight)


def write_taesd(folder: Path, encoder_state=None, decoder_state=None, variant="taesd") -> Path:
    """A TAESD folder whose encoder or decoder tensors a test may replace."""
    autoencoder = TinyAutoencoderFamily.random(variant)
    autoencoder.save_pretrained(folder)
    if encoder_state is not None:
        save_file(encoder_state, folder / "encoder.safetensors")
    if decoder_state is not None:
        save_file(decoder_state, folder / "decoder.safetensors")
    return folder


def encoder_state(variant="taesd", **replacements):
    state = dict(TinyAutoencoderFamily.random(variant).encoder.state_dict())
    state.update(replacements)
    return {name: tensor for name, tensor in state.items() if tensor is not None}


@contextmanager
def one_line_error(match: str):
    """The error users see: a LatentDistillError whose single line matches (and so names the file or key)."""
    with pytest.raises(LatentDistillError, match=match) as error:
        yield
    assert "\n" not in str(error.value)


def test_truncated_and_corrupt_safetensors(tmp_path):
    folder = write_taesd(tmp_path)
    path = folder / "encoder.safetensors"
    path.write_bytes(path.read_bytes()[:200])
    with one_line_error(r"could not read weights file .*encoder\.safetensors"):
        load_autoencoder(str(folder))
    path.write_bytes(b"\xff" * 64)  # a header length no file can have
    with one_line_error(r"could not read weights file .*encoder\.safetensors"):
        load_autoencoder(str(folder))


def test_foreign_safetensors(tmp_path):
    folder = write_taesd(tmp_path, encoder_state={"backbone.weight": torch.zeros(3, 3)})
    with one_line_error(r"encoder\.safetensors is not a TAESD encoder: no 4-D tensor '14\.weight'"):
        load_autoencoder(str(folder))


@pytest.mark.parametrize(
    "replacements, message",
    [
        (
            {"14.weight": torch.zeros(5, 64, 3, 3), "14.bias": torch.zeros(5)},
            r"'14\.weight' of shape \(5, 64, 3, 3\) gives 5 latent channels",
        ),
        (
            {"3.conv.0.weight": torch.zeros(64, 64, 1, 1)},
            r"'3\.conv\.0\.weight' has shape \(64, 64, 1, 1\), a taesd encoder expects \(64, 64, 3, 3\)",
        ),
        ({"3.conv.0.bias": None}, r"missing tensor '3\.conv\.0\.bias'"),
        ({"20.weight": torch.zeros(1)}, r"unexpected tensor '20\.weight'"),
    ],
)
def test_wrong_tensor_names_or_shapes(tmp_path, replacements, message):
    folder = write_taesd(tmp_path, encoder_state=encoder_state(**replacements))
    with one_line_error(r"encoder\.safetensors.*" + message):
        load_autoencoder(str(folder))


def test_taef2_without_pool_branches(tmp_path):
    state = {name: tensor for name, tensor in encoder_state("taef2").items() if "pool" not in name}
    folder = write_taesd(tmp_path, encoder_state=state, variant="taef2")
    with one_line_error(r"encoder\.safetensors: missing tensor '11\.pool\.0\.weight'"):
        load_autoencoder(str(folder))


def test_encoder_and_decoder_disagree(tmp_path):
    folder = write_taesd(tmp_path, decoder_state=TinyAutoencoderFamily.random("taef1").decoder.state_dict())
    with one_line_error(r"encoder .* has 4 latent channels \(taesd\) but decoder .*decoder\.safetensors has 16"):
        load_autoencoder(str(folder))


def test_folder_problems(tmp_path):
    missing = str(tmp_path / "no-such-folder")
    with one_line_error(r"does not exist: .*no-such-folder"):
        load_autoencoder(missing)
    with one_line_error(r"TAESD weights folder not found: .*no-such-folder"):
        load_autoencoder(missing, kind="taesd")
    with one_line_error(r"could not load AutoencoderKL from .*no-such-folder"):
        load_autoencoder(missing, kind="kl")
    with one_line_error(r"holds neither a diffusers config\.json"):
        load_autoencoder(str(tmp_path))
    with one_line_error(r"subfolder-x is not a folder"):
        load_autoencoder(str(tmp_path), subfolder="subfolder-x")

    write_taesd(tmp_path)
    save_file(TinyAutoencoderFamily.random("taesd").encoder.state_dict(), tmp_path / "old_encoder.safetensors")
    with one_line_error(r"exactly one \*encoder\*.* found encoder\.safetensors, old_encoder\.safetensors"):
        load_autoencoder(str(tmp_path))

    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with one_line_error(r"config\.json describes a 'UNet2DModel'"):
        load_autoencoder(str(tmp_path))


def test_unknown_kind_and_unresolvable_hub_id():
    with one_line_error(r"unknown autoencoder kind 'vqgan' \(known: kl, pixels, taesd, tiny\)"):
        load_autoencoder("x", kind="vqgan")
    with one_line_error(r"'nobody-here/no-such-vae' .* could not be resolved.*pass a local folder"):
        load_autoencoder("nobody-here/no-such-vae")


def test_wrong_input_shapes():
    autoencoder = TinyAutoencoderFamily.random("taesd")
    with one_line_error(r"images of shape \(N, 3, H, W\).*got \(2, 1, 16, 16\)"):
        autoencoder.encode(torch.rand(2, 1, 16, 16))
    with one_line_error(r"images of shape .*got \(2, 3, 12, 16\)"):
        autoencoder.encode(torch.rand(2, 3, 12, 16))
    with one_line_error(r"latents of shape \(N, 4, h, w\), got \(2, 16, 2, 2\)"):
        autoencoder.decode(torch.rand(2, 16, 2, 2))


def mean_psnr(images: torch.Tensor, reconstructions: torch.Tensor) -> float:
    """Mean over images of per-image PSNR, images in [0, 1]."""
    mse = (images - reconstructions).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1 / mse)).mean().item()


def test_taef2_reconstructs_cifar10():
    weights, data = SHARED / "weights" / "taef2", SHARED / "data" / "cifar10" / "test"
    if not weights.is_dir() or not data.is_dir():
        pytest.skip(f"real weights or CIFAR-10 not found under {SHARED}")
    autoencoder = load_autoencoder(str(weights))
    assert autoencoder.spec()["variant"] == "taef2"

    paths = [path for folder in sorted(data.iterdir()) for path in sorted(folder.glob("*.jpg"))[:20]]
    assert len(paths) == 200
    pixels = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    images = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255

    psnr_32 = mean_psnr(images, autoencoder.decode_batched(autoencoder.encode_batched(images, 100), 100))
    upsampled = F.interpolate(images, size=64, mode="bicubic", align_corners=False).clamp(0, 1)
    psnr_64 = mean_psnr(upsampled, autoencoder.decode_batched(autoencoder.encode_batched(upsampled, 100), 100))
    print(f"taef2 CIFAR-10 PSNR: {psnr_32:.2f} dB at 32x32, {psnr_64:.2f} dB upsampled (bicubic) to 64x64")
    assert 23 < psnr_32 < 26, psnr_32
    assert psnr_64 > 29.5, psnr_64


def test_recomputed_decode_gives_the_same_images_and_gradients(tmp_path):
    autoencoder = load_autoencoder(str(save_tiny_autoencoder(tmp_path / "taesd")))
    start = torch.randn(5, 4, 2, 2)
    results = []
    for chunk in (0, 2):
        latents = start.clone().requires_grad_(True)
        images = autoencoder.decode_recomputed(latents, chunk)
        images.square().sum().backward()
        results.append((images.detach(), latents.grad))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
