"""The run model: every bad input or refused command gives ONE line ``error: ...`` on stderr (exit code 2)
naming the file or key, and changes nothing already written; an accepted run writes only its own folder.

Covers: registries open to user code (config key ``imports``), a diverging run, the run-folder lock
(live and stale), refused reruns, SIGTERM + ``--resume``, where and how ``evaluate`` writes, launches of
several processes, and the CLI's interrupt / pipe / ``info`` edges. Every run is the tiny CPU set of
``helpers.make_tiny_base``; one finished distillation (module fixture) is copied by the tests that need one.
"""

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before diffusers / huggingface_hub read it: tests never touch the network

import dataclasses
import fcntl
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from latentdistill import workflows
from latentdistill.cli import INTERRUPTED, Terminated, main, report_errors
from latentdistill.config import load_config
from latentdistill.distill.distribution_matching import DistributionMatching
from latentdistill.distill.objective import OBJECTIVES, ObjectiveSetup
from latentdistill.distill.synthetic import initial_synthetic_set
from latentdistill.errors import LatentDistillError
from latentdistill.export import read_distilled, write_distilled
from latentdistill.launch import launched_processes
from latentdistill.run_folder import RunFolder
from latentdistill.tasks.classification import ClassificationTask

from helpers import REPO, make_tiny_base, one_line, tiny_overrides

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


# --- helpers and the one finished run ----------------------------------------------------------


@dataclasses.dataclass
class TinyRun:
    """The module's tiny base (image folder, autoencoder, latent cache), an empty config file, and one
    finished 4-iteration distillation in ``run_dir``."""

    base: Path
    config: Path
    run_dir: Path

    @property
    def distilled(self) -> Path:
        return self.run_dir / RunFolder.DISTILLED

    def overrides(self, run_dir: Path, **distill) -> list[str]:
        return tiny_overrides(self.base, run_dir, **distill)

    def evaluate_overrides(self) -> list[str]:
        """The user's tiny overrides without ``output_dir``: evaluate picks its default destination."""
        return [item for item in self.overrides(self.run_dir) if not item.startswith("output_dir=")]

    def distill_argv(self, run_dir: Path, *extra: str, **distill) -> list[str]:
        return ["--no-progress", "distill", "--config", str(self.config), *self.overrides(run_dir, **distill), *extra]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyRun:
    base = make_tiny_base(tmp_path_factory.mktemp("run_model"))
    config = base / "empty.yaml"
    config.write_text("")
    run = TinyRun(base, config, base / "run")
    assert main(run.distill_argv(run.run_dir)) == 0
    assert run.distilled.is_file()
    return run


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop anything printed before
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(err: str, *names) -> str:
    """The single ``error: ...`` line on stderr, checked to name each of ``names``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err, err
    for name in names:
        assert str(name) in lines[0], (name, lines[0])
    return lines[0]


def checkpoint_iteration(path: Path) -> int:
    with safe_open(path, framework="pt") as file:
        return int(file.metadata()["iteration"])


def logged_iterations(run_dir: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run_dir / RunFolder.LOG).read_text().splitlines()]


def killed_copy(tiny: TinyRun, run_dir: Path) -> Path:
    """A run folder as a killed run leaves it: only the checkpoint and config.yaml of the finished run."""
    run_dir.mkdir(parents=True)
    for name in (RunFolder.CHECKPOINT, RunFolder.CONFIG):
        shutil.copy2(tiny.run_dir / name, run_dir / name)
    return run_dir


def copied_set(tiny: TinyRun, folder: Path, name: str = "set.safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy2(tiny.distilled, folder / name))


@pytest.fixture
def no_training(monkeypatch):
    """Fail loudly if an evaluation gets as far as training networks."""

    def refuse(self, *args, **kwargs):
        raise AssertionError("the evaluation started training before the refusal")

    monkeypatch.setattr(ClassificationTask, "evaluate", refuse)


def write_module(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return name


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """``tmp_path`` on ``sys.path``; the modules a test imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if getattr(sys.modules[name], "__file__", None) and Path(sys.modules[name].__file__).parent == tmp_path:
            del sys.modules[name]


# --- 1. registries open to user code ---------------------------------------------------------

USER_PARTS = """
    import torch
    from torch import nn

    import latentdistill.nets
    from latentdistill.distill.objective import OBJECTIVES, ObjectiveSetup

    BUILT = []  # (num_classes, resolution, width) of every network built
    STEPS = []  # one entry per objective iteration


    @latentdistill.nets.register("tiny_user_net")
    class TinyUserNet(nn.Module):
        def __init__(self, num_classes, in_channels=3, resolution=32, width=0, depth=0):
            super().__init__()
            BUILT.append((num_classes, resolution, width))
            width = width or 8
            self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.classifier = nn.Linear(width * 4, num_classes)

        def embed(self, images):
            return self.features(images).flatten(1)

        def forward(self, images):
            return self.classifier(self.embed(images))


    class UserMeanMatching:
        def __init__(self, setup: ObjectiveSetup):
            self.setup = setup

        def iteration(self, context):
            STEPS.append(context.num_classes)
            for parameter in context.net.parameters():
                parameter.requires_grad_(False)
            real = context.real_batches(context.generator)
            synthetic = context.synthetic_batches(context.generator)
            loss = sum(((context.net.embed(real[c]).mean(0) - context.net.embed(synthetic[c]).mean(0)) ** 2).sum()
                       for c in real)
            return [context.update(loss)]


    @OBJECTIVES.register("user_dm")
    def build_user_dm(setup: ObjectiveSetup):
        return UserMeanMatching(setup)
"""


def test_user_module_registers_a_network_and_an_objective(tiny, user_modules, capsys):
    """Acceptance: a module of the user's own, named under ``imports``, adds a network and an objective
    that a CLI run then distils with."""
    module = write_module(user_modules, "my_parts", USER_PARTS)
    run_dir = user_modules / "run"
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, f"imports=[{module}]", "distill.net=tiny_user_net",
                                                    "distill.objective=user_dm"))
    assert code == 0, err
    parts = sys.modules[module]
    assert parts.STEPS == [3, 3, 3, 3]  # the user's objective ran every iteration
    assert (3, 16, 16) in parts.BUILT  # the user's network, at the data's resolution and distill.net_width

    distilled = read_distilled(run_dir / RunFolder.DISTILLED)
    assert distilled.metadata["config"]["imports"] == [module]
    assert distilled.metadata["config"]["distill"]["net"] == "tiny_user_net"
    assert distilled.metadata["config"]["distill"]["objective"] == "user_dm"
    config = load_config(None, tiny.overrides(run_dir))
    data = workflows.run_encode(config, progress=False)
    start = initial_synthetic_set(data.train.latents, data.train.labels, data.train_rows, 3, config.distill.ipc,
                                  config.distill.init, config.seed)
    assert torch.equal(distilled.labels, start.labels)
    assert torch.isfinite(distilled.latents).all()
    assert not torch.equal(distilled.latents, start.latents), "the latents never moved"


def test_unimportable_module_is_one_line_naming_imports(tiny, tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "imports=[no_such_module]"))
    assert code == 2
    one_line_error(err, "'imports'", "no_such_module")
    assert not run_dir.exists()


# --- 2. a run that diverges ------------------------------------------------------------------


class NanAtThirdIteration:
    """Distribution matching whose loss becomes NaN from its 3rd iteration on."""

    def __init__(self, setup: ObjectiveSetup):
        self.inner = DistributionMatching(setup.augment, setup.criterion, setup.precision)
        self.count = 0

    def iteration(self, context):
        self.count += 1
        if self.count >= 3:
            update = context.update
            context = dataclasses.replace(context, update=lambda loss: update(loss * float("nan")))
        return self.inner.iteration(context)


def test_diverging_run_stops_keeping_its_last_checkpoint(tiny, tmp_path, capsys):
    if "nan_at_3" not in OBJECTIVES:
        OBJECTIVES.register("nan_at_3", NanAtThirdIteration)
    run_dir = tmp_path / "run"
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "distill.objective=nan_at_3", checkpoint_every=2))
    assert code == 2
    line = one_line_error(err, "diverged at iteration 3", "checkpoint of iteration 2")
    assert "nothing was exported" in line
    assert checkpoint_iteration(run_dir / RunFolder.CHECKPOINT) == 2
    assert not (run_dir / RunFolder.DISTILLED).exists() and not (run_dir / RunFolder.GRID).exists()
    assert logged_iterations(run_dir) == [1, 2]


# --- 3. the run-folder lock ----------------------------------------------------------------


def test_second_process_on_a_locked_run_folder_is_refused(tiny, tmp_path, capsys, snapshot):
    run_dir = killed_copy(tiny, tmp_path / "run")
    handle = os.open(run_dir / RunFolder.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(handle, f"pid {os.getpid()} on the-test\n".encode())
        before = snapshot(run_dir)
        code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "--resume"))
        assert code == 2
        one_line_error(err, str(run_dir), "in use by another process", f"pid {os.getpid()} on the-test")
        assert snapshot(run_dir) == before
    finally:
        os.close(handle)


def test_lock_of_a_killed_process_is_taken_over(tiny, tmp_path, capsys):
    run_dir = killed_copy(tiny, tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'pid stale on elsewhere')\n"
         "print('locked', flush=True)\ntime.sleep(600)\n", str(run_dir / RunFolder.LOCK)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        probe = os.open(run_dir / RunFolder.LOCK, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the lock is really held while the holder lives
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "--resume"))
    assert code == 0, err
    assert (run_dir / RunFolder.DISTILLED).is_file()
    assert (run_dir / RunFolder.LOCK).read_text().startswith(f"pid {os.getpid()} on ")


# --- 4. refused reruns change nothing --------------------------------------------------------


def test_refused_reruns_of_a_killed_run_change_nothing(tiny, tmp_path, capsys, snapshot):
    run_dir = killed_copy(tiny, tmp_path / "run")
    config_bytes = (run_dir / RunFolder.CONFIG).read_bytes()
    before = snapshot(run_dir)

    code, out, err = cli(capsys, *tiny.distill_argv(run_dir))  # no --resume
    assert code == 2
    one_line_error(err, run_dir / RunFolder.CHECKPOINT, "--resume")
    assert (run_dir / RunFolder.CONFIG).read_bytes() == config_bytes
    assert snapshot(run_dir) == before

    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "--resume", lr=0.05))  # a changed key
    assert code == 2
    one_line_error(err, "'distill.lr'", "0.05")
    assert (run_dir / RunFolder.CONFIG).read_bytes() == config_bytes
    assert snapshot(run_dir) == before


def test_resume_of_a_finished_run_is_refused(tiny, tmp_path, capsys, snapshot):
    run_dir = tmp_path / "finished"
    shutil.copytree(tiny.run_dir, run_dir)
    before = snapshot(run_dir)
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "--resume", iterations=6))
    assert code == 2
    one_line_error(err, str(run_dir), "finished run")
    assert snapshot(run_dir) == before


# --- 5. SIGTERM, then --resume ----------------------------------------------------------------


def complete_log_lines(run_dir: Path) -> int:
    log = run_dir / RunFolder.LOG
    return log.read_text().count("\n") if log.exists() else 0


def test_sigterm_keeps_a_checkpoint_and_resume_equals_an_uninterrupted_run(tiny, tmp_path, capsys):
    iterations = 40
    argv = lambda run_dir, *extra: tiny.distill_argv(run_dir, "threads=1", *extra, iterations=iterations,  # noqa: E731
                                                     checkpoint_every=3)
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "latentdistill", *argv(killed)], cwd=REPO, env=ENV,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline and complete_log_lines(killed) < 4:
            time.sleep(0.01)
        if process.poll() is not None:
            pytest.fail(f"the run ended (rc {process.returncode}) before SIGTERM: raise its iterations\n"
                        f"{process.stderr.read()[-2000:]}")
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, err[-2000:]
    assert "interrupted" in err and "--resume" in err and "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == f"interrupted: {INTERRUPTED['distill']}"
    assert not (killed / RunFolder.DISTILLED).exists(), "the run finished before SIGTERM landed"
    stopped_at = checkpoint_iteration(killed / RunFolder.CHECKPOINT)
    assert 3 <= stopped_at < iterations

    code, out, err = cli(capsys, *argv(killed, "--resume"))
    assert code == 0, err
    code, out, err = cli(capsys, *argv(tmp_path / "full"))
    assert code == 0, err
    resumed = read_distilled(killed / RunFolder.DISTILLED)
    full = read_distilled(tmp_path / "full" / RunFolder.DISTILLED)
    assert torch.equal(resumed.labels, full.labels)
    assert torch.equal(resumed.latents, full.latents), (
        f"resumed from iteration {stopped_at}: max difference {(resumed.latents - full.latents).abs().max():.3e}")
    assert logged_iterations(killed) == list(range(1, iterations + 1))


# --- 6. evaluate ----------------------------------------------------------------------------


def test_evaluate_only_reads_the_file_and_keeps_a_symlink(tiny, tmp_path, capsys, snapshot):
    source = copied_set(tiny, tmp_path / "sets")
    link_dir = tmp_path / "links"
    link_dir.mkdir()
    link = link_dir / "set.safetensors"
    link.symlink_to(source)
    before = snapshot(source.parent)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(link), *tiny.evaluate_overrides())
    assert code == 0, err
    assert snapshot(source.parent) == before  # the file (mtime, size, bytes) and its folder untouched
    assert link.is_symlink() and os.readlink(link) == str(source)
    report = json.loads((link_dir / "evaluation-1" / RunFolder.REPORT).read_text())
    assert report["distilled_file"] == str(source.resolve())


def test_evaluate_default_destination_is_a_fresh_folder_each_time(tiny, tmp_path, capsys, snapshot):
    source = copied_set(tiny, tmp_path / "sets")
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides())
    assert code == 0, err
    first = tmp_path / "sets" / "evaluation-1"
    assert (first / RunFolder.REPORT).is_file() and (first / RunFolder.CONFIG).is_file()
    before = snapshot(first)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides())
    assert code == 0, err
    assert (tmp_path / "sets" / "evaluation-2" / RunFolder.REPORT).is_file()
    assert snapshot(first) == before
    assert sorted(path.name for path in source.parent.iterdir()) == ["evaluation-1", "evaluation-2", "set.safetensors"]


def test_evaluate_into_a_folder_holding_a_report_is_refused(tiny, tmp_path, capsys, snapshot, no_training):
    source = copied_set(tiny, tmp_path / "sets")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / RunFolder.REPORT).write_text("{}")
    before, sets_before = snapshot(out_dir), snapshot(source.parent)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides(),
                         f"output_dir={out_dir}")
    assert code == 2
    one_line_error(err, out_dir / RunFolder.REPORT, "already exists")
    assert snapshot(out_dir) == before and snapshot(source.parent) == sets_before


def test_evaluate_ignores_paths_in_the_files_metadata(tiny, tmp_path, capsys):
    distilled = read_distilled(tiny.distilled)
    distilled.metadata["config"]["cache"]["dir"] = str(tmp_path / "evil")
    distilled.metadata["config"]["autoencoder"]["name_or_path"] = "someone/on-the-hub"
    hostile = tmp_path / "sets" / "hostile.safetensors"
    hostile.parent.mkdir()
    write_distilled(hostile, distilled)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(hostile), *tiny.evaluate_overrides())
    assert code == 0, err
    assert (tmp_path / "sets" / "evaluation-1" / RunFolder.REPORT).is_file()
    assert not (tmp_path / "evil").exists()


def test_evaluate_destination_that_cannot_be_created(tiny, tmp_path, capsys, snapshot, no_training):
    source = copied_set(tiny, tmp_path / "sets")
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file")
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides(),
                         f"output_dir={blocker / 'x'}")
    assert code == 2
    one_line_error(err, blocker / "x")
    assert snapshot(tmp_path) == before


def test_a_finished_evaluation_survives_an_unwritable_report(tiny, tmp_path, capsys, monkeypatch):
    """The disk fills up after the networks have trained: the table is printed, the report is kept in the
    temporary folder, and the one-line error says where."""
    import latentdistill.run_folder as run_folder_module
    from latentdistill.io import WriteError

    def full_disk(path, text):
        raise WriteError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(run_folder_module, "atomic_write_text", full_disk)
    source = copied_set(tiny, tmp_path / "sets")
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides())
    assert code == 2
    assert "| convnet |" in out  # printed before the report was written
    message = one_line_error(err, "No space left on device", "saved to")
    fallback = Path(message.rsplit("saved to ", 1)[1].split(" instead")[0])
    assert json.loads(fallback.read_text())["networks"]["convnet"]["distilled"]["runs"]
    fallback.unlink()


def test_evaluate_task_mismatch_names_task(tiny, tmp_path, capsys, snapshot, no_training):
    source = copied_set(tiny, tmp_path / "sets")
    before = snapshot(source.parent)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides(), "task=sr")
    assert code == 2
    one_line_error(err, str(source), "'task'", "classification")
    assert snapshot(source.parent) == before


def test_evaluate_resolution_mismatch_names_the_key_and_writes_nothing(tiny, tmp_path, capsys, snapshot):
    source = copied_set(tiny, tmp_path / "sets")
    before, cache_before = snapshot(source.parent), snapshot(tiny.base / "cache")
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides(),
                         "data.resolution=32")
    assert code == 2
    one_line_error(err, "'data.resolution'", "16")
    assert snapshot(tiny.base / "cache") == cache_before
    assert snapshot(source.parent) == before and not (source.parent / "evaluation-1").exists()


def test_evaluate_resolution_mismatch_is_refused_before_encoding(tiny, tmp_path, capsys, snapshot):
    source = copied_set(tiny, tmp_path / "sets")
    cache = tmp_path / "cache32"
    before = snapshot(source.parent)
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides(),
                         "data.resolution=32", f"cache.dir={cache}")
    assert code == 2
    one_line_error(err, "'data.resolution'", "16")
    assert not cache.exists(), "a 32px latent cache was built for a refused evaluation"
    assert snapshot(source.parent) == before and not (source.parent / "evaluation-1").exists()


# --- 7. launches of several processes ------------------------------------------------------


def test_single_process_verb_refuses_a_multi_process_launch(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cache = tmp_path / "cache"
    code, out, err = cli(capsys, "--no-progress", "encode", "--config", str(tiny.config),
                         *tiny.overrides(tmp_path / "run"), f"cache.dir={cache}")
    assert code == 2
    one_line_error(err, "'encode'", "runs in one process", "WORLD_SIZE")
    assert not cache.exists() and not (tmp_path / "run").exists()


def test_accelerate_mixed_precision_must_agree_with_precision(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    run_dir = tmp_path / "run"
    code, out, err = cli(capsys, *tiny.distill_argv(run_dir, "precision=fp32"))
    assert code == 2
    one_line_error(err, "'precision'", "bf16")
    assert not run_dir.exists()
    # Agreeing values are accepted: one process, nothing to refuse.
    processes = launched_processes(load_config(None, ["precision=bf16"]))
    assert processes.count == 1 and processes.is_main


# --- 8. smaller CLI cases --------------------------------------------------------------------


@pytest.mark.parametrize("verb, says", [("encode", "run the same command again"), ("evaluate", "nothing was written")])
@pytest.mark.parametrize("interrupt, code", [(KeyboardInterrupt, 130), (Terminated, 143)])
def test_interrupt_message_is_the_verbs_own(capsys, verb, says, interrupt, code):
    def interrupted():
        raise interrupt()

    assert report_errors(interrupted, verb=verb) == code
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"interrupted: {INTERRUPTED[verb]}"]
    assert says in err and "--resume" not in err


def test_interrupted_evaluation_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    """What the interrupt message promises holds: no evaluation-N folder is left behind, so the next
    evaluation takes evaluation-1."""

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt()

    monkeypatch.setattr(ClassificationTask, "evaluate", interrupted)
    source = copied_set(tiny, tmp_path / "sets")
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides())
    assert code == 130
    assert err.strip().splitlines() == [f"interrupted: {INTERRUPTED['evaluate']}"] and "nothing was written" in err
    assert sorted(path.name for path in source.parent.iterdir()) == ["set.safetensors"]
    monkeypatch.undo()
    code, out, err = cli(capsys, "--no-progress", "evaluate", str(source), *tiny.evaluate_overrides())
    assert code == 0, err
    assert (source.parent / "evaluation-1" / RunFolder.REPORT).is_file()


def test_info_on_a_directory(tmp_path, capsys):
    code, out, err = cli(capsys, "info", str(tmp_path))
    assert code == 2 and out == ""
    one_line_error(err, str(tmp_path), "is a directory")


def test_info_into_a_closed_pipe_prints_no_traceback(tiny, tmp_path):
    """``info FILE | head -c 10``: the reader leaves after 10 bytes. A metadata record larger than a pipe's
    buffer makes sure the writer is still writing when it does."""
    with safe_open(tiny.distilled, framework="pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    metadata["notes"] = json.dumps("x" * 300_000)
    big = tmp_path / "big.safetensors"
    save_file(tensors, big, metadata=metadata)
    script = (f'"{sys.executable}" -m latentdistill info "{big}" | head -c 10; status=${{PIPESTATUS[0]}}; '
              'echo; echo "rc=$status"')
    result = subprocess.run(["bash", "-c", script], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr[-2000:]
    assert result.stderr == ""
    assert result.stdout.startswith("file: ")
    # 141: the write failed with EPIPE and `report_errors` ended quietly (the path under test was taken)
    assert result.stdout.strip().splitlines()[-1] == "rc=141", result.stdout[-200:]


def test_info_refuses_nan_latents_naming_latents(tiny, tmp_path, capsys):
    with safe_open(tiny.distilled, framework="pt") as file:
        metadata = dict(file.metadata())
        tensors = {key: file.get_tensor(key) for key in file.keys()}
    tensors["latents"] = tensors["latents"].clone()
    tensors["latents"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_file(tensors, path, metadata=metadata)
    code, out, err = cli(capsys, "info", str(path))
    assert code == 2 and out == ""
    one_line_error(err, str(path), "'latents'", "non-finite")


@pytest.mark.parametrize(("override", "key"), [
    ("prior.name=vqgan", "'prior.name'"), ("distill.objective=kip", "'distill.objective'"),
    ("distill.init=magic", "'distill.init'"), ("distill.net=resnet50", "'distill.net'"), ("task=detection", "'task'"),
    ("device=mps", "'device'"), ("device=cuda:7", "'device'"),
])
def test_unknown_parts_are_refused_before_any_data_is_read(tiny, tmp_path, capsys, override, key):
    """A typo in a part's name costs nothing: no cache is built or read, no run folder is made."""
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    code, _, err = cli(capsys, *tiny.distill_argv(run_dir), f"cache.dir={cache}", override)
    assert code == 2
    one_line_error(err, key)
    assert not cache.exists() and not run_dir.exists()


def test_run_resume_after_an_interrupted_evaluation_only_evaluates(tiny, tmp_path, capsys):
    """A run killed while evaluating holds its set but no report: ``run --resume`` evaluates it, untouched."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny.run_dir, run_dir)
    (run_dir / RunFolder.REPORT).unlink(missing_ok=True)
    before = (run_dir / RunFolder.DISTILLED).read_bytes()
    argv = tiny.distill_argv(run_dir)
    argv[argv.index("distill")] = "run"
    code, out, err = cli(capsys, *argv, "--resume")
    assert code == 0, err
    assert "| convnet |" in out and (run_dir / RunFolder.REPORT).is_file()
    assert (run_dir / RunFolder.DISTILLED).read_bytes() == before
    # the same with a setting that made another set is refused, naming it
    (run_dir / RunFolder.REPORT).unlink()
    code, _, err = cli(capsys, *argv, "--resume", "distill.lr=0.05")
    assert code == 2
    one_line_error(err, "'distill.lr'")


def test_resume_below_the_checkpoints_iteration_is_refused(tiny, tmp_path, capsys, snapshot):
    run_dir = killed_copy(tiny, tmp_path / "killed")
    before = snapshot(run_dir)
    code, _, err = cli(capsys, *tiny.distill_argv(run_dir, iterations=2), "--resume")
    assert code == 2
    one_line_error(err, "iteration 4", "'distill.iterations'")
    assert snapshot(run_dir) == before


def test_fresh_folders_are_never_shared(tmp_path):
    first, second = RunFolder.fresh(tmp_path, "evaluation"), RunFolder.fresh(tmp_path, "evaluation")
    assert (first.path.name, second.path.name) == ("evaluation-1", "evaluation-2")
    assert first.claimed and second.path.is_dir()


def test_a_lazy_registry_entry_that_cannot_load_is_one_line():
    from latentdistill.registry import Registry

    registry = Registry("widget", "widget.name")
    registry.register("broken", "no_such_package.widgets:Widget")
    with pytest.raises(LatentDistillError) as error:
        registry.build("broken")
    assert "widget 'broken' cannot be loaded" in one_line(error)
    with pytest.raises(LatentDistillError, match=r"config key 'widget.name': unknown widget 'nope' \(known: broken\)"):
        registry.get("nope")
