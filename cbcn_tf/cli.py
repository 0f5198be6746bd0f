"""The ``cbcn`` console command: a thin layer over `cbcn_tf.training`, `cbcn_tf.config`,
`cbcn_tf.models`, `cbcn_tf.data` and `cbcn_tf.converters`.

Examples (shell)::

    cbcn list-models
    cbcn train --config cifar10_resnet18_k4 --output runs/c10 --set epochs=10 --seed 1
    cbcn train --config cifar10_resnet18_k4 --output runs/c10 --set epochs=20 --resume
    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \
        cbcn train --config imagenet_resnet18 --output /shared/runs/in --distribute multi_worker \
        --set batch_size=512 --set lr_scaling=linear --set base_batch_size=256
    cbcn evaluate runs/c10
    cbcn evaluate runs/c10 --no-rotated --angle 90 --angle 45
    cbcn summary cbcn_resnet18 --dataset digits --set kernel_stage=[4,4,8,16]
    cbcn convert runs/c10 runs/c10/model.tflite
    cbcn benchmark runs/c10/model.tflite
    cbcn predict runs/c10 photos/ --top-k 3
    cbcn demo --output /tmp/demo

In Python, ``cbcn_tf.cli.main(["list-models"])`` runs the same and returns the exit code.
User errors (`cbcn_tf.errors.CbcnError`: unknown names, bad overrides, missing or damaged
files, a folder holding another run, ...) print one ``cbcn: error: ...`` line on stderr and
exit with code 2; any other exception is a bug and shows its traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import typing

import cbcn_tf  # noqa: F401  (selects Keras 2 before anything touches tf.keras)
from cbcn_tf import config as config_lib
from cbcn_tf.errors import CbcnError, ConfigError, OutputError

EXIT_USAGE = 2
# Config keys with a flag of their own in `cbcn train` (a key given both as a flag and with
# --set is refused: one of the two values would be dropped without a word).
_TRAIN_FLAGS = ("seed", "deterministic", "distribute", "batch_size", "lr_scaling")


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args) or 0
    except CbcnError as exc:  # user errors; anything else is a bug and keeps its traceback
        print(f"cbcn: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE


def error_line(exc: CbcnError) -> str:
    """The one line printed for a user error (an OSError's text without its ``[Errno N]``)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return " ".join(str(text).split())


# --- subcommands -----------------------------------------------------------------------------


def _train(args) -> None:
    from cbcn_tf import training

    config = _train_config(args)
    result = training.train(config, args.output, resume=args.resume, verbose=args.verbose)
    if result.history:
        last = result.history[-1]
        split = config.eval_split + (" (rotated)" if config.rotate_train else "")
        print(f"Epoch {last['epoch'] + 1}: {split} top-1 {last['val_accuracy']:.4f}, "
              f"top-5 {last['val_top5']:.4f}")
    if not result.is_chief:
        print(f"Done (non-chief worker: the chief writes {result.output_dir}).")
        return
    print(f"Wrote {result.output_dir}: {config_lib.CONFIG_FILE}, {training.HISTORY_FILE}, "
          f"{training.MODEL_FILE}, {training.SUMMARY_FILE}, {training.CURVES_FILE}")


def _train_config(args) -> config_lib.TrainConfig:
    """The recipe, then the ``--set`` values, then the typed flags given."""
    config = config_lib.load_config(args.config, args.set)
    flags = {key: getattr(args, key) for key in _TRAIN_FLAGS if getattr(args, key) is not None}
    for item in args.set:
        key = item.partition("=")[0].strip()
        if key in flags:
            flag = "--" + key.replace("_", "-")
            given = flag if flags[key] is True else f"{flag} {flags[key]}"
            raise ConfigError(f"{given} and --set {item.strip()} both set {key}; give only one "
                              "of them.")
    config = dataclasses.replace(config, **flags)
    _warn_single_worker(config)
    return config


def _warn_single_worker(config) -> None:
    """Say, once and in one line, that multi_worker without TF_CONFIG is one local worker."""
    if config.distribute != "multi_worker" or os.environ.get("TF_CONFIG"):
        return
    import warnings

    from cbcn_tf.training.distribute import SINGLE_WORKER_WARNING, SingleWorkerWarning

    print(f"cbcn: warning: {SINGLE_WORKER_WARNING}", file=sys.stderr)
    warnings.filterwarnings("ignore", category=SingleWorkerWarning)  # said above


def _check_positive(option: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{option} must be a positive integer, got {value}; e.g. {option} 64.")


def _evaluate(args) -> None:
    from cbcn_tf import training

    _check_positive("--batch-size", args.batch_size)
    # first: it names a missing run folder or file
    model = training.load_model(args.run, trusted=args.trust_model)
    options = training.run_eval_options(args.run, dataset=args.dataset, split=args.split,
                                        data_dir=args.data_dir)
    variants = [False] if args.no_rotated else [False, True]
    print(f"{'split':<22}{'top-1':>8}{'top-5':>8}{'loss':>9}")

    def show(name, scores):
        print(f"{name:<22}{scores['top1']:>8.4f}{scores['top5']:>8.4f}{scores['loss']:>9.4f}")

    for rotate in variants:
        scores = training.evaluate(model, rotate=rotate, batch_size=args.batch_size, **options)
        show(options["split"] + (" (rotated)" if rotate else ""), scores)
    if args.angle:  # every image turned by one fixed angle, one row per angle
        turned = training.evaluate_angles(model, angles=args.angle, batch_size=args.batch_size,
                                          **options)
        for angle, scores in turned.items():
            show(f"{options['split']} at {angle:g} deg", scores)


def _angle(text) -> float:
    """A finite number of degrees (argparse type of ``cbcn evaluate --angle``)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of degrees; give a finite "
                                         "number such as 90 or -22.5.")
    return value


def _summary(args) -> None:
    from cbcn_tf import training

    kwargs = training.dataset_model_kwargs(args.dataset) if args.dataset else {}
    kwargs.update(config_lib.parse_assignments(args.set))
    model = training.model_from_kwargs(args.model, kwargs)
    print(training.summary_text(model), end="")


def _check_destination(path) -> None:
    """Refuse, before any work, a destination whose folder is missing or that is a folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"Cannot write {path}: the folder {folder} does not exist. Create "
                          "it first (mkdir -p) or choose another destination.")
    if os.path.isdir(path):
        raise OutputError(f"Cannot write {path}: it is a folder. Name a file, e.g. "
                          f"{os.path.join(path, 'model.tflite')}.")


def _warn_float_export(model) -> None:
    from cbcn_tf.rewrite import iter_layers

    binary = [layer.name for layer in iter_layers(model)
              if getattr(layer, "kernel_quantizer", None) is not None]
    if binary:
        print(f"cbcn: warning: {model.name} has {len(binary)} binary layers (e.g. {binary[0]}); "
              "--float stores their weights as float32, about 32x larger and slower than the "
              "LCE file `cbcn convert` writes without --float.", file=sys.stderr)


def _convert(args) -> None:
    from cbcn_tf import training
    from cbcn_tf.converters import export_lce, export_tflite

    _check_destination(args.output)
    model = training.load_model(args.model, trusted=args.trust_model)
    if args.float:
        _warn_float_export(model)
        result = export_tflite(model, args.output, verify=not args.no_verify)
    else:
        result = export_lce(model, args.output, target=args.target, verify=not args.no_verify,
                            strict=not args.allow_float)
    ops = ", ".join(f"{name} x{count}" for name, count in sorted(result.ops.items()))
    print(f"Wrote {result.path} ({result.bytes / 1024:,.1f} KiB); ops: {ops}")
    if result.parity is not None:
        print(f"Parity vs Keras on {result.parity.samples} random inputs: max |diff| "
              f"{result.parity.max_abs_diff:.2e} (tolerance {result.parity.tolerance:.2e})")


def _benchmark(args) -> None:
    from cbcn_tf.converters import benchmark_tflite
    from cbcn_tf.converters.benchmark import check_settings, read_tflite

    check_settings(runs=args.runs, warmup=args.warmup, threads=args.threads)
    for path in filter(None, (args.model, args.baseline)):
        read_tflite(path)  # a missing, truncated or non-TFLite file fails here, naming it
    report = benchmark_tflite(args.model, runs=args.runs, warmup=args.warmup,
                              threads=tuple(args.threads), baseline=args.baseline,
                              name=os.path.basename(args.model))
    print(report.to_markdown())


def _predict(args) -> None:
    import json

    from cbcn_tf.predict import predict

    results = predict(args.model, args.images, top_k=args.top_k, dataset=args.dataset,
                      data_dir=args.data_dir, trusted=args.trust_model)
    if args.json:
        print(json.dumps([result.as_dict() for result in results], indent=2))
    else:
        print("\n".join(result.line() for result in results))


def _list_models(args) -> None:
    from cbcn_tf.models import list_models, list_pretrained

    print("\n".join(list_models()))
    rows = list_pretrained()
    if rows:
        print("\nPackaged weights (NAME:WEIGHTS for evaluate / convert / predict; Python: "
              "create_model(..., weights=WEIGHTS)):")
        print(f"{'NAME:WEIGHTS':<26}{'data':<12}{'error %':>8}{'seed':>6}{'epochs':>8}  recipe")
        for row in rows:
            data = row["dataset"] + ("-rot" if row["rotate"] else "")
            print(f"{row['spec']:<26}{data:<12}{row['test_error']:>8.2f}{row['seed']:>6}"
                  f"{row['epochs']:>8}  {row['recipe']}")


def _list_datasets(args) -> None:
    from cbcn_tf.data import list_datasets

    print("\n".join(list_datasets()))
    print("folder:PATH  (images in PATH/<split>/<class>/<image>)")


def _list_recipes(args) -> None:
    print("\n".join(config_lib.list_recipes()))


def _demo(args) -> None:
    from cbcn_tf.demo import run_demo

    run_demo(args.output, epochs=args.epochs, export=not args.no_export)


# --- argument parser -------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cbcn", description="Circulant Binary Convolutional Networks: train, evaluate, "
        "summarise, export and benchmark.")
    parser.add_argument("--version", action="version", version=f"cbcn-tf {cbcn_tf.__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(name, function, help_text):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(command=function)
        return sub

    train = command("train", _train, "Train a recipe into an output folder.")
    train.add_argument("--config", required=True, metavar="RECIPE",
                       help="recipe YAML file or shipped recipe name (cbcn list-recipes)")
    train.add_argument("--output", required=True, metavar="DIR", help="run folder")
    _add_set(train, "config key=value override (repeatable), e.g. --set epochs=10 "
             "--set model_kwargs.orientations=2")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in DIR at its next epoch (same model settings, "
                       "other values allowed); an interrupted run restarted with the same "
                       "command continues without it")
    train.add_argument("--seed", type=int, help="random seed (tf.keras.utils.set_random_seed)")
    train.add_argument("--deterministic", action="store_true", default=None,
                       help="enable TensorFlow op determinism (slower)")
    train.add_argument("--distribute", choices=typing.get_args(config_lib.Distribute),
                       help="distribution strategy (default: the recipe's, usually none): "
                       "mirrored = all local devices, multi_worker = MultiWorkerMirroredStrategy "
                       "over the cluster in TF_CONFIG (docs/DISTRIBUTED.md)")
    train.add_argument("--batch-size", dest="batch_size", type=int,
                       help="GLOBAL batch size, split across all replicas of all workers")
    train.add_argument("--lr-scaling", dest="lr_scaling",
                       choices=typing.get_args(config_lib.LrScaling),
                       help="linear: lr * batch_size / base_batch_size (set base_batch_size)")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                       help="Keras verbosity: 1 progress bar (default), 2 one line per epoch")

    evaluate = command("evaluate", _evaluate,
                       "Top-1 / top-5 of a trained model on a split and its rotated variant.")
    evaluate.add_argument("run", metavar="RUN", help="run folder (or a model .h5 file)")
    evaluate.add_argument("--dataset", help="dataset name (default: the run's config.yaml)")
    evaluate.add_argument("--data-dir", help="dataset folder (default: the run's)")
    evaluate.add_argument("--split", help="split (default: the run's eval_split, else test)")
    evaluate.add_argument("--batch-size", type=int, default=128)
    evaluate.add_argument("--no-rotated", action="store_true", help="skip the rotated variant")
    evaluate.add_argument("--angle", type=_angle, action="append", metavar="DEGREES",
                          help="also score every image turned by this fixed angle, "
                               "counter-clockwise (repeatable: --angle 90 --angle 180)")
    _add_trust(evaluate)

    summary = command("summary", _summary,
                      "Print the Larq summary and cbcn_tf.summary of a zoo model.")
    summary.add_argument("model", metavar="MODEL_NAME", help="a name from cbcn list-models")
    summary.add_argument("--dataset", help="take input_shape / num_classes from this dataset")
    _add_set(summary, "model keyword argument (repeatable), e.g. --set orientations=2")

    convert = command("convert", _convert, "Export a trained model to an LCE .tflite file.")
    convert.add_argument("model", metavar="RUN", help="run folder or model .h5 file")
    convert.add_argument("output", metavar="OUTPUT", help="destination .tflite file")
    convert.add_argument("--target", choices=("arm", "xcore"), default="arm")
    convert.add_argument("--float", action="store_true",
                         help="plain float TFLite (for full-precision twins) instead of LCE")
    convert.add_argument("--no-verify", action="store_true",
                         help="skip the Keras vs interpreter parity check")
    convert.add_argument("--allow-float", action="store_true",
                         help="export even if a binary layer stays float (warns)")
    _add_trust(convert)

    benchmark = command("benchmark", _benchmark, "Latency of a .tflite model on this host.")
    benchmark.add_argument("model", metavar="TFLITE")
    benchmark.add_argument("--baseline", metavar="TFLITE", help="e.g. the float twin")
    benchmark.add_argument("--runs", type=int, default=50)
    benchmark.add_argument("--warmup", type=int, default=5)
    benchmark.add_argument("--threads", type=int, nargs="+", default=[1, 2])

    predict = command("predict", _predict,
                      "Top-k classes of image files, prepared as the model's training images.")
    predict.add_argument("model", metavar="MODEL", help="run folder, model .h5, LCE / TFLite "
                         ".tflite, or NAME:WEIGHTS (packaged weights, cbcn list-models)")
    predict.add_argument("images", metavar="IMAGE", nargs="+",
                         help="PNG / JPEG file or folder (its .png / .jpg / .jpeg files, sorted)")
    predict.add_argument("--dataset", help="the dataset the model was trained on (default: its "
                         "run's config.yaml; needed for a .h5 / .tflite outside a run folder)")
    predict.add_argument("--data-dir", help="dataset folder (image_folder: its class names)")
    predict.add_argument("--top-k", type=int, default=5, metavar="K",
                         help="classes per image (default 5)")
    predict.add_argument("--json", action="store_true",
                         help="a JSON list of {path, top: [{label, name, probability}]}")
    _add_trust(predict)

    command("list-models", _list_models, "Names accepted by --config's model key and summary.")
    command("list-datasets", _list_datasets, "Names accepted by the dataset key.")
    command("list-recipes", _list_recipes, "Recipes shipped with cbcn-tf (for --config).")

    demo = command("demo", _demo, "Train CBCN, XNOR and full-precision nets on the packaged "
                   "digits and compare them (a few minutes on 2 cores).")
    demo.add_argument("--output", default="demo_output", metavar="DIR")
    demo.add_argument("--epochs", type=int,
                      help="epochs per arm (default: the digits_demo recipe's)")
    demo.add_argument("--no-export", action="store_true", help="skip the LCE export")
    return parser


def _add_trust(parser):
    parser.add_argument("--trust-model", action="store_true",
                        help="load a model file whose config holds a Lambda layer or classes "
                        "from outside Keras, larq and cbcn_tf (that code runs while loading: "
                        "only for files from a source you trust)")


def _add_set(parser, help_text):
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


if __name__ == "__main__":
    sys.exit(main())
