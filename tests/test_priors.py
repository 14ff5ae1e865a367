"""Prior ``diffusion`` (LD3M's chain) with tiny random denoisers of every kind, saved and loaded back for real."""

import json
import math
import shutil

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file

from latentdistill import workflows
from latentdistill.autoencoders import load_autoencoder
from latentdistill.cli import main
from latentdistill.config import PriorConfig, load_config
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled
from latentdistill.priors import build_prior
from latentdistill.priors.denoisers import PRIOR_FILE, load_denoiser
from latentdistill.priors.diffusion import DiffusionPrior

from helpers import (
    CLASSES,
    DENOISER_KINDS,
    REPO,
    make_tiny_base,
    one_line,
    save_tiny_autoencoder,
    save_tiny_denoiser,
    tiny_overrides,
)


@pytest.fixture(scope="module")
def denoisers(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("denoisers")
    return {kind: save_tiny_denoiser(root / kind, kind) for kind in DENOISER_KINDS}


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    return load_autoencoder(str(save_tiny_autoencoder(tmp_path_factory.mktemp("taesd"))))


def make_prior(folder, **settings) -> DiffusionPrior:
    return build_prior(PriorConfig(name="diffusion", denoiser=str(folder), **settings), list(CLASSES))


def latents_and_labels(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(6, 4, 2, 2, generator=generator), torch.tensor([0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("kind", DENOISER_KINDS)
@pytest.mark.parametrize("residual", ["mean", "x0", "none"])
def test_gradient_reaches_latents_and_conditioning(denoisers, autoencoder, kind, residual):
    prior = make_prior(denoisers[kind], residual=residual, denoising_steps=4, t_start=600)
    assert prior.denoiser.kind == kind
    start, labels = latents_and_labels()
    latents = start.clone().requires_grad_(True)
    conditioning = prior.initial_conditioning(labels).requires_grad_(True)
    images = autoencoder.decode(prior(latents, conditioning))
    (images * torch.linspace(-1, 1, images.numel()).view_as(images)).sum().backward()
    for tensor in (latents, conditioning):
        assert torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", DENOISER_KINDS)
def test_no_noise_and_no_residual_is_the_plain_decoder(denoisers, autoencoder, kind):
    prior = make_prior(denoisers[kind], residual="none", t_start=0, denoising_steps=3)
    latents, labels = latents_and_labels()
    through_chain = autoencoder.decode(prior(latents, prior.initial_conditioning(labels)))
    assert torch.allclose(through_chain, autoencoder.decode(latents), atol=1e-6)


def test_a_real_start_level_changes_the_images(denoisers, autoencoder):
    prior = make_prior(denoisers["dit"], residual="none", t_start=500, denoising_steps=3)
    latents, labels = latents_and_labels()
    assert not torch.allclose(prior(latents, prior.initial_conditioning(labels)), latents, atol=1e-3)


@pytest.mark.parametrize("kind", ["dit", "sd"])  # epsilon and v-prediction
def test_plain_chain_is_diffusers_ddim(denoisers, kind):
    """Residual none from t_start = 1000 is DDIM (eta 0, trailing spacing, last step to the clean latent)."""
    prior = make_prior(denoisers[kind], residual="none", t_start=1000, denoising_steps=5)
    latents, labels = latents_and_labels()
    conditioning = prior.initial_conditioning(labels)
    scheduler = DDIMScheduler.from_pretrained(denoisers[kind], subfolder="scheduler", timestep_spacing="trailing", clip_sample=False,
                                              set_alpha_to_one=True)
    scheduler.set_timesteps(5)
    noise = prior.start_noise(latents)
    a_start = scheduler.alphas_cumprod[999]
    x = a_start.sqrt() * latents + (1 - a_start).sqrt() * noise
    with torch.no_grad():
        for timestep in scheduler.timesteps:
            output = prior.denoiser.predict(x, torch.full((6,), int(timestep)), conditioning)
            x = scheduler.step(output, timestep, x, eta=0.0).prev_sample
        ours = prior(latents, conditioning)
    assert [int(t) for t in scheduler.timesteps] == [level - 1 for level in prior.levels()[:-1]]
    assert torch.allclose(ours, x, atol=1e-5)


def test_checkpointing_changes_memory_not_gradients(denoisers, autoencoder):
    gradients = []
    for steps_per_recompute in (0, 1, 3):
        prior = make_prior(denoisers["dit"], denoising_steps=5, t_start=400, steps_per_recompute=steps_per_recompute)
        start, labels = latents_and_labels()
        latents = start.clone().requires_grad_(True)
        conditioning = prior.initial_conditioning(labels).requires_grad_(True)
        autoencoder.decode(prior(latents, conditioning)).square().mean().backward()
        gradients.append((latents.grad, conditioning.grad))
    for latents_grad, conditioning_grad in gradients[1:]:
        assert torch.allclose(latents_grad, gradients[0][0], atol=1e-6)
        assert torch.allclose(conditioning_grad, gradients[0][1], atol=1e-6)


@pytest.mark.parametrize("kind", ["dit", "unet"])
def test_initial_conditioning_is_the_models_own_label_embedding(denoisers, kind):
    """Before any step, the learnable c gives exactly what the model computes from the labels."""
    denoiser = load_denoiser(denoisers[kind])
    latents, labels = latents_and_labels()
    timesteps = torch.full((6,), 250)
    conditioning = denoiser.initial_conditioning(labels, list(CLASSES))
    expected_tables = 2 if kind == "dit" else 1  # DiT keeps one label table per block
    assert conditioning.shape[:2] == (6, expected_tables)
    with torch.no_grad():
        ours = denoiser.predict(latents, timesteps, conditioning)
        if kind == "dit":
            reference = denoiser.model(latents, timestep=timesteps, class_labels=labels).sample[:, :4]
        else:
            reference = denoiser.model(latents, timesteps, class_labels=labels).sample
    assert torch.allclose(ours, reference, atol=1e-6)


def test_prompt_conditioning_starts_from_the_encoded_prompts(denoisers):
    prior = make_prior(denoisers["sd"], prompt="a photo of a {class}")
    conditioning = prior.initial_conditioning(torch.tensor([0, 1, 1]))
    assert torch.equal(conditioning[1], conditioning[2]) and not torch.equal(conditioning[0], conditioning[1])
    assert torch.allclose(conditioning[0], prior.denoiser.encode_prompts(["a photo of a class a"])[0])


def test_classifier_free_guidance(denoisers):
    latents, labels = latents_and_labels()
    outputs = {}
    for scale in (1.0, 3.0):
        prior = make_prior(denoisers["dit"], guidance_scale=scale, t_start=500, denoising_steps=3)
        outputs[scale] = prior(latents, prior.initial_conditioning(labels))
    assert torch.isfinite(outputs[3.0]).all() and not torch.allclose(outputs[1.0], outputs[3.0])
    sd = make_prior(denoisers["sd"], guidance_scale=3.0, t_start=500, denoising_steps=2)
    assert torch.isfinite(sd(latents, sd.initial_conditioning(labels))).all()
    with pytest.raises(LatentDistillError) as error:  # this UNet2DModel has no null class
        make_prior(denoisers["unet"], guidance_scale=3.0)
    assert "prior.guidance_scale" in one_line(error)


def test_class_ids_map_dataset_classes_onto_the_models(denoisers):
    prior = make_prior(denoisers["dit"], class_ids=[2, 0, 1])
    plain = make_prior(denoisers["dit"])
    assert torch.equal(prior.initial_conditioning(torch.tensor([0])), plain.initial_conditioning(torch.tensor([2])))
    with pytest.raises(LatentDistillError) as error:
        make_prior(denoisers["dit"], class_ids=[0, 1])
    assert "prior.class_ids" in one_line(error)
    with pytest.raises(LatentDistillError) as error:
        make_prior(denoisers["dit"], class_ids=[0, 1, 7]).initial_conditioning(torch.tensor([2]))
    assert "prior.class_ids" in one_line(error)


def test_bad_denoisers_fail_in_one_line(tmp_path, denoisers):
    cases = {
        "": "prior.denoiser",
        str(tmp_path / "missing"): "does not exist",
        str(tmp_path): "not a diffusers denoiser folder",
    }
    for path, expected in cases.items():
        with pytest.raises(LatentDistillError) as error:
            make_prior(path)
        assert expected in one_line(error)
    with pytest.raises(LatentDistillError) as error:
        make_prior(denoisers["dit"], kind="unet")
    assert "prior.kind" in one_line(error)
    # Weights of the wrong shape for the config beside them.
    broken = tmp_path / "broken"
    save_tiny_denoiser(broken, "dit")
    other = tmp_path / "other"
    save_tiny_denoiser(other, "unet")
    (broken / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(
        (other / "diffusion_pytorch_model.safetensors").read_bytes())
    with pytest.raises(LatentDistillError) as error:
        make_prior(broken)
    assert "could not load DiTTransformer2DModel" in one_line(error)
    # No scheduler config to read the noise schedule from.
    (other / "scheduler_config.json").unlink()
    with pytest.raises(LatentDistillError) as error:
        make_prior(other)
    assert "no scheduler config" in one_line(error)


def test_latents_of_the_wrong_width_are_named(denoisers):
    prior = make_prior(denoisers["dit"])
    with pytest.raises(LatentDistillError) as error:
        prior(torch.zeros(3, 8, 2, 2), prior.initial_conditioning(torch.tensor([0, 1, 2])))
    assert "4-channel latents" in one_line(error)


# --- distillation through the chain, end to end ------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return make_tiny_base(tmp_path_factory.mktemp("base"))


def diffusion_overrides(base, run_dir, denoiser, iterations=2, **prior) -> list[str]:
    values = {"name": "diffusion", "denoiser": denoiser, "denoising_steps": 3, "t_start": 400, **prior}
    return [*tiny_overrides(base, run_dir, iterations=iterations), *[f"prior.{k}={v}" for k, v in values.items()]]


@pytest.mark.parametrize("kind", DENOISER_KINDS)
def test_distill_through_each_denoiser(tiny_base, denoisers, tmp_path, kind, capsys):
    config = load_config(None, diffusion_overrides(tiny_base, tmp_path / "run", denoisers[kind]))
    output = workflows.run_distill(config, progress=False)
    distilled = read_distilled(output)
    assert distilled.embeddings is not None and len(distilled.embeddings) == len(distilled.latents) == 3
    prior_spec = distilled.metadata["prior"]
    assert prior_spec["name"] == "diffusion" and prior_spec["denoiser"]["kind"] == kind
    # The conditioning was learnt, and the stored images are what the exported (z, c) generate.
    start = build_prior(config.prior, list(CLASSES)).initial_conditioning(distilled.labels)
    assert not torch.allclose(distilled.embeddings, start)
    prior = build_prior(config.prior, list(CLASSES))
    autoencoder = load_autoencoder(config.autoencoder.name_or_path)
    with torch.no_grad():
        images = autoencoder.decode(prior(distilled.latents, distilled.embeddings))
    assert (distilled.images.float() - (images.clamp(0, 1) * 255).round()).abs().max() <= 1
    assert main(["info", str(output)]) == 0
    shown = capsys.readouterr().out
    assert "embeddings: (3," in shown and '"name": "diffusion"' in shown


def test_embedding_lr_zero_keeps_the_conditioning(tiny_base, denoisers, tmp_path):
    overrides = diffusion_overrides(tiny_base, tmp_path / "run", denoisers["dit"]) + ["distill.embedding_lr=0"]
    config = load_config(None, overrides)
    distilled = read_distilled(workflows.run_distill(config, progress=False))
    start = build_prior(config.prior, list(CLASSES)).initial_conditioning(distilled.labels)
    assert torch.equal(distilled.embeddings, start)


def test_diffusion_run_resumes_bit_for_bit(tiny_base, denoisers, tmp_path):
    straight = workflows.run_distill(load_config(None, diffusion_overrides(tiny_base, tmp_path / "a", denoisers["dit"], 4)), progress=False)
    workflows.run_distill(load_config(None, diffusion_overrides(tiny_base, tmp_path / "b", denoisers["dit"], 2)), progress=False)
    (tmp_path / "c").mkdir()  # a finished run is never extended in place: its checkpoint continues elsewhere
    shutil.copy(tmp_path / "b" / "checkpoint.safetensors", tmp_path / "c" / "checkpoint.safetensors")
    resumed = workflows.run_distill(load_config(None, diffusion_overrides(tiny_base, tmp_path / "c", denoisers["dit"], 4)),
                                    resume=True, progress=False)
    first, second = read_distilled(straight), read_distilled(resumed)
    assert torch.equal(first.latents, second.latents) and torch.equal(first.embeddings, second.embeddings)


# --- train-prior ----------------------------------------------------------------------------------------


def train_prior_overrides(base, output, architecture="dit", steps=4) -> list[str]:
    return [
        *tiny_overrides(base, output)[:5],  # data, autoencoder and cache of the tiny base
        f"output_dir={output}", "device=cpu", f"train_prior.architecture={architecture}", "train_prior.width=16",
        "train_prior.heads=2", "train_prior.depth=1", f"train_prior.steps={steps}", "train_prior.batch_size=8",
        "train_prior.checkpoint_every=2",
    ]


@pytest.mark.parametrize("architecture", ["dit", "unet"])
def test_train_prior_then_distill_through_it(tiny_base, tmp_path, architecture):
    folder = tmp_path / "prior"
    assert main(["--no-progress", "train-prior", "--config", str(REPO / "configs/smoke.yaml"),
                 *train_prior_overrides(tiny_base, folder, architecture)]) == 0
    info = json.loads((folder / PRIOR_FILE).read_text())
    assert info["classes"] == list(CLASSES) and info["null_class"] == 3 and info["latent_scale"] > 0
    assert (folder / ("transformer" if architecture == "dit" else "unet") / "config.json").is_file()
    log = [json.loads(line) for line in (folder / "train_prior_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [2, 4] and all(math.isfinite(e["validation_loss"]) for e in log)
    # The trained folder is an ordinary diffusers prior: distill through it, with guidance from the null class.
    config = load_config(None, diffusion_overrides(tiny_base, tmp_path / "run", folder, guidance_scale=2.0))
    distilled = read_distilled(workflows.run_distill(config, progress=False))
    assert distilled.metadata["prior"]["latent_scale"] == pytest.approx(info["latent_scale"])
    # A finished prior is never overwritten.
    with pytest.raises(LatentDistillError) as error:
        workflows.run_train_prior(load_config(None, train_prior_overrides(tiny_base, folder, architecture)), progress=False)
    assert "nothing was overwritten" in one_line(error)


def test_interrupted_prior_training_resumes_bit_for_bit(tiny_base, tmp_path):
    straight = workflows.run_train_prior(load_config(None, train_prior_overrides(tiny_base, tmp_path / "a", steps=4)), progress=False)
    # A run stopped after its checkpoint at step 2: the final model and its record were never written.
    stopped = workflows.run_train_prior(load_config(None, train_prior_overrides(tiny_base, tmp_path / "b", steps=2)), progress=False)
    (stopped / PRIOR_FILE).unlink()
    shutil.rmtree(stopped / "transformer")
    config = load_config(None, train_prior_overrides(tiny_base, tmp_path / "b", steps=4))
    with pytest.raises(LatentDistillError) as error:
        workflows.run_train_prior(config, progress=False)
    assert "--resume" in one_line(error)
    resumed = workflows.run_train_prior(config, resume=True, progress=False)
    weights = "transformer/diffusion_pytorch_model.safetensors"
    first, second = load_file(straight / weights), load_file(resumed / weights)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    changed = load_config(None, train_prior_overrides(tiny_base, tmp_path / "a", steps=4) + ["train_prior.lr=0.1"])
    (straight / PRIOR_FILE).unlink()
    with pytest.raises(LatentDistillError) as error:
        workflows.run_train_prior(changed, resume=True, progress=False)
    assert "train_prior" in one_line(error)
