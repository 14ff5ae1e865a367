"""``latentdistill <verb>``: each verb parses its arguments and makes one call into ``latentdistill.workflows``.

Errors caused by input (files, weights, config keys) print as one line, ``error: ...``, exit code 2.
SIGINT and SIGTERM stop a verb cleanly (exit 130 and 143), keeping what it finished.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from latentdistill import __version__
from latentdistill.errors import LatentDistillError

# What an interrupted verb keeps, and how to continue.
INTERRUPTED = {
    "distill": "the last checkpoint written (every distill.checkpoint_every iterations) is kept; run the same command with --resume to continue",
    "run": ("the last checkpoint written (every distill.checkpoint_every iterations) is kept, and an SR evaluation's "
            "finished runs; run the same command with --resume to continue"),
    "train-prior": "the last checkpoint written (every train_prior.checkpoint_every steps) is kept; run the same command with --resume to continue",
    "encode": "finished cache shards are kept; run the same command again to continue encoding",
    "buffer": "finished experts and the current expert's last epoch are kept; run the same command again to continue",
    "evaluate": ("an SR evaluation keeps its finished runs and the running network's last minute in its folder's "
                 "progress/ (named above): run it again with that output_dir to continue; otherwise nothing was "
                 "written but cached baselines: run it again"),
    "sr-train": "the training's checkpoint (written every minute) is kept in output_dir: run the same command again to continue",
    "export": "nothing was written (the export is renamed into place only when complete); run it again",
    "prepare": "finished splits are kept, a half-written one is redone; run the same command again",
    "rank-nets": "full-data results already trained are cached; run the same command again to continue",
}
SINGLE_PROCESS_VERBS = ("encode", "buffer", "train-prior", "sr-train", "sr-eval", "info", "export", "config", "prepare",
                        "compare", "report", "rank-nets")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--config", required=required, help="YAML run config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. distill.ipc=10 output_dir=outputs/x")


def _add_set_arguments(parser: argparse.ArgumentParser) -> None:
    """How to read a set another method made (``latentdistill.export.sets``)."""
    parser.add_argument("--format", default="auto", choices=("auto", "distilled", "imagefolder", "images", "mtt"))
    parser.add_argument("--normalization", help="float images: unit ([0, 1]), cifar10, cifar100, imagenet, or MEAN/STD "
                        "as two comma lists")
    parser.add_argument("--zca", type=float, metavar="EPS", help="float images are ZCA-whitened with this eps (MTT: 0.1)")
    parser.add_argument("--labels", help="mtt: the labels file (default: labels_best.pt beside the images)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latentdistill", description="Latent dataset distillation with diffusion models.")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.add_argument("--version", action="version", version=f"latentdistill {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    skip_bad = "count and list unreadable images instead of stopping"
    resume = "continue the run in output_dir from its checkpoint"

    for name, text in (("encode", "encode a dataset into the latent cache"),
                       ("buffer", "train expert trajectories on the real data for objective mtt")):
        verb = verbs.add_parser(name, help=text)
        _add_config_arguments(verb)
        verb.add_argument("--skip-bad", action="store_true", help=skip_bad)
    for name, text in (("distill", "distill a synthetic set and export it"), ("run", "distill, then evaluate the result"),
                       ("train-prior", "train a class-conditional latent diffusion prior on the latent cache")):
        verb = verbs.add_parser(name, help=text)
        _add_config_arguments(verb)
        verb.add_argument("--resume", action="store_true", help=resume)
        verb.add_argument("--skip-bad", action="store_true", help=skip_bad)

    evaluate = verbs.add_parser("evaluate", help="train fresh networks on a distilled set (any method's) and test them")
    evaluate.add_argument("file", help="a set (only read): our .safetensors file, an ImageFolder DIR/<class>/*.png, an "
                          "image safetensors file (images, labels), or MTT/DATM's images_best.pt")
    evaluate.add_argument("--nets", help="comma-separated networks, one row each, e.g. convnet,alexnet,vgg11,resnet18,vit")
    _add_set_arguments(evaluate)
    _add_config_arguments(evaluate, required=False)

    sr_train = verbs.add_parser("sr-train", help="train an SR network (sr.net) on the sr.train folders or on a distilled SR file")
    _add_config_arguments(sr_train)
    sr_train.add_argument("--from", dest="source", help="a distilled SR file to train on instead of the sr.train folders")

    sr_eval = verbs.add_parser("sr-eval", help="PSNR/SSIM (Y, border = scale) of bicubic or a trained SR model on HR images")
    sr_eval.add_argument("--model", required=True, help="'bicubic' or an sr_model.safetensors file")
    sr_eval.add_argument("--scale", type=int, required=True, choices=(2, 3, 4))
    sr_eval.add_argument("folder", help="a folder of HR test images")

    info = verbs.add_parser("info", help="print a distilled file's metadata and shapes")
    info.add_argument("file")

    _add_referee_verbs(verbs)
    return parser


def _add_referee_verbs(verbs) -> None:
    """The verbs that judge, show and move sets and runs, and get data."""
    export = verbs.add_parser("export", help="write a set as an ImageFolder of PNGs or a Hugging Face dataset")
    export.add_argument("file", help="a distilled set (as for evaluate)")
    export.add_argument("--to", dest="target", nargs=2, metavar=("FORMAT", "DIR"), required=True,
                        help="imagefolder DIR (PNGs in class folders, labels.json, metadata.json) or hf DIR (datasets' save_to_disk)")
    export.add_argument("--push-to-hub", metavar="ID", help="with --to hf: also push the dataset to the hub (online)")
    _add_set_arguments(export)
    _add_config_arguments(export, required=False)

    config = verbs.add_parser("config", help="print the resolved config (defaults, file and overrides) as YAML")
    _add_config_arguments(config, required=False)

    rank = verbs.add_parser("rank-nets", help="rank candidate architectures on a set and on the full data (proxy for NAS)")
    rank.add_argument("file", help="a distilled set (as for evaluate)")
    rank.add_argument("--nets", required=True, help="registry names (convnet,alexnet,vgg11) or a grid such as "
                      "convnet:width=32,64;depth=2,3;norm=instancenorm,batchnorm")
    rank.add_argument("--full-epochs", type=int, help="epochs on the full data (default evaluate.full_epochs)")
    _add_set_arguments(rank)
    _add_config_arguments(rank, required=False)

    prepare = verbs.add_parser("prepare", help="download (or read --archive) a dataset into the ImageFolder layout")
    prepare.add_argument("name", help="cifar10 or cifar100")
    prepare.add_argument("directory", help="where train/<class>/*.png and test/<class>/*.png go")
    prepare.add_argument("--archive", help="a local copy of the official archive (checksum verified) instead of downloading")

    compare = verbs.add_parser("compare", help="one table of several runs' evaluations (markdown, or CSV)")
    compare.add_argument("runs", nargs="+", help="run or evaluation folders, or report.json files")
    compare.add_argument("--csv", action="store_true", help="CSV instead of markdown")

    report = verbs.add_parser("report", help="(re)write a run or evaluation folder's self-contained report.html")
    report.add_argument("folder")


def report_errors(function, *args, verb: str | None = None, **kwargs) -> int:
    """Call ``function``; input errors become one ``error: ...`` line on stderr and exit code 2; SIGINT and
    SIGTERM say what was kept (exit 130, 143); a closed stdout (``| head``) ends quietly."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated) if _in_main_thread() else None
    try:
        function(*args, **kwargs)
        return 0
    except LatentDistillError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        kept = INTERRUPTED.get(verb or "", "")
        print(f"interrupted{': ' + kept if kept else ''}", file=sys.stderr)
        return 143 if isinstance(interrupt, Terminated) else 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse stops filling `overrides` at the first option (`evaluate FILE --nets a,b key=value`):
    # the key=value words after it come back as extra, and are overrides all the same.
    if extra and hasattr(args, "overrides") and all("=" in word and not word.startswith("-") for word in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return report_errors(_run_verb, args, verb=args.verb)


def _run_verb(args: argparse.Namespace) -> None:
    from latentdistill.launch import refuse_multi_process

    if args.verb in SINGLE_PROCESS_VERBS:
        refuse_multi_process(args.verb)
    if args.verb in FILE_VERBS:
        FILE_VERBS[args.verb](args)
        return
    from latentdistill.config import load_config
    from latentdistill.export.sets import SetSource

    overrides = list(args.overrides) + (["data.skip_bad=true"] if getattr(args, "skip_bad", False) else [])
    overrides += [f"evaluate.nets=[{args.nets}]"] if getattr(args, "nets", None) and args.verb == "evaluate" else []
    source = SetSource(args.format, args.normalization, args.zca, args.labels) if hasattr(args, "format") else None
    if args.verb == "export":
        config = load_config(args.config, overrides) if args.config or overrides else None
        _export(args, config, source)
        return
    config = load_config(args.config, overrides)
    CONFIG_VERBS[args.verb](args, config, overrides, source)


def _info(args: argparse.Namespace) -> None:
    from latentdistill.export import describe_distilled

    print(describe_distilled(args.file), flush=True)


def _sr_eval(args: argparse.Namespace) -> None:
    import json

    from latentdistill.workflows import run_sr_eval

    result = run_sr_eval(args.model, args.scale, args.folder)
    print(json.dumps({"model": args.model, "scale": args.scale, "folder": args.folder, **result}))


def _prepare(args: argparse.Namespace) -> None:
    from latentdistill.data.prepare import prepare_dataset

    folder = prepare_dataset(args.name, args.directory, args.archive, progress=not args.no_progress)
    print(f"prepared: {folder} (use it with data.root={folder})")


def _compare(args: argparse.Namespace) -> None:
    from latentdistill.reports.compare import compare_runs, csv_text, markdown

    records = compare_runs(args.runs)
    print(csv_text(records) if args.csv else markdown(records), end="" if args.csv else "\n")


def _report(args: argparse.Namespace) -> None:
    from latentdistill.reports.html import write_html_report

    print(f"report: {write_html_report(args.folder)}")


def _export(args, config, source) -> None:
    from latentdistill.workflows import run_export

    target, directory = args.target
    print(f"exported: {run_export(args.file, target, directory, config, source, args.push_to_hub, not args.no_progress)}")


def _config(args, config, overrides, source) -> None:
    import yaml

    from latentdistill.config import config_to_dict

    print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")


def _evaluate(args, config, overrides, source) -> None:
    from latentdistill.launch import launched_processes
    from latentdistill.run_folder import RunFolder
    from latentdistill.workflows import run_evaluate

    processes = launched_processes(config)
    # output_dir on the command line is where the report goes; without it (a config file's output_dir
    # names the distillation's folder), a fresh evaluation-N folder beside FILE.
    given = any(item.split("=", 1)[0].strip() == "output_dir" for item in overrides)
    folder = RunFolder(config.output_dir) if given else None
    run_evaluate(args.file, config, folder, processes, progress=not args.no_progress, source=source)


def _rank_nets(args, config, overrides, source) -> None:
    from latentdistill.workflows.rank import run_rank_nets

    run_rank_nets(args.file, config, args.nets, args.full_epochs, progress=not args.no_progress, source=source)


def _single(args, config, overrides, source) -> None:
    """encode, buffer, train-prior, sr-train: one call each, one line saying what was made."""
    from latentdistill import workflows

    progress = not args.no_progress
    if args.verb == "encode":
        from latentdistill.tasks import build_task

        data = workflows.run_encode(config, progress=progress)  # imports the config's modules first
        print(build_task(config).summary(data))
    elif args.verb == "sr-train":
        print(f"SR model: {workflows.run_sr_train(config, args.source, progress=progress)}")
    elif args.verb == "buffer":
        folder = workflows.run_buffer(config, progress=progress)
        use = "distill.objective=gm distill.matching_nets=experts" if config.task == "sr" else "distill.objective=mtt"
        print(f"expert buffer: {folder} (use it with {use} buffer.dir={folder})")
    else:
        folder = workflows.run_train_prior(config, resume=args.resume, progress=progress)
        print(f"trained prior: {folder} (use it with prior.name=diffusion prior.denoiser={folder})")


def _distill(args, config, overrides, source) -> None:
    """distill, and run (distill, then evaluate)."""
    from latentdistill import workflows
    from latentdistill.launch import launched_processes
    from latentdistill.run_folder import RunFolder

    progress = not args.no_progress
    processes = launched_processes(config)
    if args.verb == "run" and args.resume and workflows.distilled_but_not_evaluated(config):
        output = RunFolder(config.output_dir).distilled  # its evaluation was interrupted: evaluate it now
    else:
        output = workflows.run_distill(config, resume=args.resume, processes=processes, progress=progress)
    if processes.is_main:
        print(f"distilled set: {output}", flush=True)
    if args.verb == "run":
        workflows.run_evaluate(output, config, RunFolder(config.output_dir), processes, progress=progress)


FILE_VERBS = {"info": _info, "sr-eval": _sr_eval, "prepare": _prepare, "compare": _compare, "report": _report}
CONFIG_VERBS = {"config": _config, "evaluate": _evaluate, "rank-nets": _rank_nets, "encode": _single, "buffer": _single,
                "train-prior": _single, "sr-train": _single, "distill": _distill, "run": _distill}


if __name__ == "__main__":
    sys.exit(main())
