"""``latentdistill <verb>``: each verb is a thin call into ``latentdistill.workflows``.

Errors caused by input (files, weights, config keys) print as one line, ``error: ...``, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from latentdistill import __version__
from latentdistill.errors import LatentDistillError


def _add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. distill.ipc=10 output_dir=outputs/x")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdistill", description="Latent dataset distillation with diffusion models.")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--version", action="version", version=f"latentdistill {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    encode = verbs.add_parser("encode", help="encode a dataset into the latent cache")
    _add_config_arguments(encode)
    encode.add_argument("--skip-bad", action="store_true", help="count and list unreadable images instead of stopping")

    distill = verbs.add_parser("distill", help="distill a synthetic set and export it")
    _add_config_arguments(distill)
    distill.add_argument("--resume", action="store_true", help="continue the run in output_dir from its checkpoint")
    distill.add_argument("--skip-bad", action="store_true", help="count and list unreadable images instead of stopping")

    evaluate = verbs.add_parser("evaluate", help="train fresh networks on a distilled file and test them")
    evaluate.add_argument("file", help="a distilled .safetensors file")
    evaluate.add_argument("--nets", help="comma-separated networks, one row each, e.g. convnet,alexnet,vgg11,resnet18,vit")
    _add_config_arguments(evaluate, required=False)

    buffer = verbs.add_parser("buffer", help="train expert trajectories on the real data for objective mtt")
    _add_config_arguments(buffer)
    buffer.add_argument("--skip-bad", action="store_true", help="count and list unreadable images instead of stopping")

    run = verbs.add_parser("run", help="distill, then evaluate the result")
    _add_config_arguments(run)
    run.add_argument("--resume", action="store_true", help="continue the run in output_dir from its checkpoint")
    run.add_argument("--skip-bad", action="store_true", help="count and list unreadable images instead of stopping")

    train_prior = verbs.add_parser("train-prior", help="train a class-conditional latent diffusion prior on the latent cache")
    _add_config_arguments(train_prior)
    train_prior.add_argument("--resume", action="store_true", help="continue the training in output_dir from its checkpoint")
    train_prior.add_argument("--skip-bad", action="store_true", help="count and list unreadable images instead of stopping")

    sr_train = verbs.add_parser("sr-train", help="train an SR network (sr.net) on the sr.train folders or on a distilled SR file")
    _add_config_arguments(sr_train)
    sr_train.add_argument("--from", dest="source", help="a distilled SR file to train on instead of the sr.train folders")

    sr_eval = verbs.add_parser("sr-eval", help="PSNR/SSIM (Y, border = scale) of bicubic or a trained SR model on HR images")
    sr_eval.add_argument("--model", required=True, help="'bicubic' or an sr_model.safetensors file")
    sr_eval.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    sr_eval.add_argument("folder", help="a folder of HR test images")

    info = verbs.add_parser("info", help="print a distilled file's metadata and shapes")
    info.add_argument("file")
    return parser


def describe(path: str) -> str:
    from latentdistill.export import read_distilled

    distilled = read_distilled(path)
    lines = [f"file: {path}", "tensors:"]
    for name in ("latents", "labels", "images", "embeddings"):
        tensor = getattr(distilled, name)
        if tensor is not None:
            lines.append(f"  {name}: {tuple(tensor.shape)} {str(tensor.dtype).replace('torch.', '')}")
    lines.append("metadata:")
    for key, value in distilled.metadata.items():
        text = json.dumps(value)
        if key == "config" and len(text) > 200:
            text = text[:200] + " ..."
        lines.append(f"  {key}: {text}")
    return "\n".join(lines)


def report_errors(function, *args, **kwargs) -> int:
    """Call ``function``; input errors become one ``error: ...`` line on stderr and exit code 2."""
    try:
        function(*args, **kwargs)
        return 0
    except LatentDistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: completed work is kept; distill with --resume to continue", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling `overrides` at the first option (`evaluate FILE --nets a,b key=value`):
    # the key=value words after it come back as extra, and are overrides all the same.
    if extra and hasattr(args, "overrides") and all("=" in word and not word.startswith("-") for word in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return report_errors(_run_verb, args)


def _run_verb(args: argparse.Namespace) -> None:
    from latentdistill import workflows
    from latentdistill.config import load_config

    progress = not args.no_progress
    if args.verb == "info":
        print(describe(args.file))
        return
    if args.verb == "sr-eval":
        result = workflows.run_sr_eval(args.model, args.scale, args.folder)
        print(json.dumps({"model": args.model, "scale": args.scale, "folder": args.folder, **result}))
        return
    if args.verb == "evaluate":
        overrides = list(args.overrides) + ([f"evaluate.nets=[{args.nets}]"] if args.nets else [])
        workflows.run_evaluate(args.file, args.config, overrides, progress=progress)
        return
    overrides = list(args.overrides) + (["data.skip_bad=true"] if getattr(args, "skip_bad", False) else [])
    config = load_config(args.config, overrides)
    if args.verb == "encode":
        data = workflows.run_encode(config, progress=progress)
        print(f"latent cache: {data.train.directory} ({len(data.train.labels)} train images), "
              f"{data.test.directory} ({len(data.test.labels)} test images)")
        return
    if args.verb == "sr-train":
        output = workflows.run_sr_train(config, args.source, progress=progress)
        print(f"SR model: {output}")
        return
    if config.task == "sr" and args.verb in ("distill", "run"):
        output = workflows.run_sr_distill(config, resume=args.resume, progress=progress)
        print(f"distilled SR set: {output}")
        if args.verb == "run":
            workflows.run_evaluate(output, progress=progress)
        return
    if args.verb == "buffer":
        folder = workflows.run_buffer(config, progress=progress)
        print(f"expert buffer: {folder} (use it with distill.objective=mtt buffer.dir={folder})")
        return
    if args.verb == "train-prior":
        folder = workflows.run_train_prior(config, resume=args.resume, progress=progress)
        print(f"trained prior: {folder} (use it with prior.name=diffusion prior.denoiser={folder})")
        return
    from accelerate import Accelerator

    output = workflows.run_distill(config, resume=args.resume, accelerator=Accelerator(cpu=config.device == "cpu"), progress=progress)
    print(f"distilled set: {output}")
    if args.verb == "run":
        workflows.run_evaluate(output, progress=progress)


if __name__ == "__main__":
    sys.exit(main())
