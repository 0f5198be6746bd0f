"""The demo main job (``cbcn demo`` / ``make demo``): CBCN against its baselines on the digits.

Offline and in a few minutes on two CPU cores, with the ``digits_demo`` recipe (scikit-learn's
packaged handwritten digits at 16x16, ResNet18 with kernel stage 4-4-8-16):

1. trains three arms with the same recipe and budget, each into ``OUTPUT/<arm>`` with the
   usual run files: the CBCN (K = 4), the XNOR baseline at the same feature widths (K = 1,
   one binary conv per shortcut like the CBCN) and the CBCN's full-precision twin;
2. prints the Larq summary (with its memory estimate) and ``cbcn_tf.summary`` of the CBCN;
3. scores every arm on the test split and its rotated variant (angles in [-45, 45] degrees,
   never seen in training) and prints a comparison table (also ``OUTPUT/results.csv``);
4. draws all arms' curves on one figure (``OUTPUT/curves.png``);
5. if ``cbcn_tf.converters`` is available, exports the CBCN to LCE (``OUTPUT/cbcn.tflite``) and
   prints its size and its parity with Keras on the test images.

Every number printed comes from this run.

Example (``run_demo`` trains three ResNet18s, a minute or more even at one epoch, so its two
lines are not run when the docstring examples are tested):
    >>> from cbcn_tf.demo import ARMS, run_demo
    >>> [label for _, label, _ in ARMS]
    ['CBCN K=4', 'XNOR K=1', 'Full precision']
    >>> rows = run_demo("demo_output", epochs=1, export=False)  # doctest: +SKIP
    >>> [row["arm"] for row in rows]  # doctest: +SKIP
    ['CBCN K=4', 'XNOR K=1', 'Full precision']
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np

from cbcn_tf import config as config_lib
from cbcn_tf import data as data_lib
from cbcn_tf import files, plots, training
from cbcn_tf.errors import ConfigError, OutputError
from cbcn_tf.summary import summary as cbcn_summary

RECIPE = "digits_demo"
# (folder, label, overrides of the recipe): the arms differ in nothing else.
ARMS = (
    ("cbcn", "CBCN K=4", []),
    ("xnor", "XNOR K=1", ["model=xnor_resnet18_doubled"]),
    ("float", "Full precision", ["model_kwargs.binary=false"]),
)
COLUMNS = (  # (result key, column title, format)
    ("arm", "arm", "{}"), ("top1", "top-1", "{:.4f}"), ("top5", "top-5", "{:.4f}"),
    ("rot_top1", "rot top-1", "{:.4f}"), ("rot_top5", "rot top-5", "{:.4f}"),
    ("learned_bits", "1-bit W learned", "{:,}"), ("bops", "BOPs", "{:,}"),
    ("flops", "FLOPs", "{:,}"), ("kib", "size KiB", "{:,.1f}"), ("seconds", "train s", "{:.0f}"),
)


def run_demo(output_dir: str = "demo_output", *, epochs: int | None = None, export: bool = True,
             verbose: int = 2, print_fn=print) -> list:
    """Run the demo into ``output_dir`` and return one result dict per arm (see `COLUMNS`).

    ``epochs`` overrides the recipe's (for a quick look); ``export=False`` skips the LCE export.
    Every argument is checked before anything is written. The run files of earlier demo runs
    in ``output_dir`` are replaced; anything else there (a user's notes) is left alone, and a
    folder of an arm's name that holds no demo run is refused.
    """
    start = time.perf_counter()
    # Everything is checked before anything is touched: the arms' configs, then the folders.
    configs = {}
    for folder, _, overrides in ARMS:
        if epochs is not None:
            overrides = [*overrides, f"epochs={epochs}"]
        configs[folder] = config_lib.load_config(RECIPE, overrides)
        config_lib.check_values(configs[folder])
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise ConfigError(f"--output {output_dir} is a file; choose a folder.")
    for folder, _, _ in ARMS:
        _check_previous_run(os.path.join(output_dir, folder), configs[folder])
    _make_output_folder(output_dir)
    rows, histories, models = [], {}, {}
    for folder, label, overrides in ARMS:
        run_dir = os.path.join(output_dir, folder)
        _remove_previous_run(run_dir)
        config = configs[folder]
        print_fn(f"\n=== {label}: {config.model} {config.model_kwargs} on {config.dataset}, "
                 f"{config.epochs} epochs")
        tic = time.perf_counter()
        result = training.train(config, run_dir, verbose=verbose)
        seconds = time.perf_counter() - tic
        if folder == "cbcn":
            print_fn(training.summary_text(result.model))
        upright = training.evaluate(result.model, config.dataset, split=config.eval_split)
        rotated = training.evaluate(result.model, config.dataset, split=config.eval_split,
                                    rotate=True)
        totals = cbcn_summary(result.model, print_fn=None).totals
        rows.append(dict(arm=label, model=config.model, top1=upright["top1"],
                         top5=upright["top5"], rot_top1=rotated["top1"],
                         rot_top5=rotated["top5"],
                         learned_bits=totals["learned_binary_weights"], bops=totals["binary_macs"],
                         flops=totals["float_macs"], kib=totals["binary_model_bytes"] / 1024,
                         seconds=seconds))
        histories[label] = result.history
        models[folder] = result.model

    plots.plot_curves(histories, os.path.join(output_dir, "curves.png"),
                      title="digits 16x16: CBCN vs XNOR vs full precision")
    files.write_csv(os.path.join(output_dir, "results.csv"), rows)
    images, labels = _test_images()
    print_fn(f"\nResults on the digits test split ({len(labels)} images); rotated = the same "
             "images rotated by [-45, 45] degrees, never seen in training:")
    print_fn(format_table(rows))
    for line in seed_spread_lines(config.epochs):
        print_fn(line)
    print_fn(f"Curves: {os.path.join(output_dir, 'curves.png')}")
    if export:
        _export_cbcn(models["cbcn"], output_dir, images, labels, print_fn)
    print_fn(f"Demo finished in {time.perf_counter() - start:.0f} s.")
    return rows


SPREAD_FILE = "demo_spread.json"


def seed_spread_lines(epochs: int, path=None) -> list:
    """Lines saying how much the demo's numbers move from seed to seed, as measured.

    Read from ``cbcn_tf/demo_spread.json`` (``path`` overrides), which ``benchmarks/report.py``
    writes from the reproduction ledger's demo cells (``benchmarks/reproduce.py --only demo``:
    this recipe, several seeds). One run's gap between two arms means little when the seeds of
    the two arms overlap; the verdicts say which gaps exceed the seed spread. Returns a note
    instead when no spread was measured for ``epochs`` epochs.
    """
    import json
    from importlib import resources

    try:
        if path is None:
            text = resources.files("cbcn_tf").joinpath(SPREAD_FILE).read_text("utf-8")
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        spread = json.loads(text)
    except (OSError, ValueError):
        return ["(No seed spread of this setting has been measured: run "
                "`python benchmarks/reproduce.py --only demo` and `python benchmarks/report.py`.)"]
    if spread["epochs"] != epochs:
        return [f"(The seed spread was measured for {spread['epochs']} epochs, not {epochs}; "
                "the numbers above are one run.)"]
    lines = [f"\nSeed spread of this setting ({spread['recipe']}, {epochs} epochs), measured "
             f"over seeds by `{spread['command']}` (mean ± std, min..max):"]
    for arm in spread["arms"]:
        top1, rot = arm["top1"], arm["rot_top1"]
        lines.append(
            f"  {arm['label']:<15} top-1 {_mean_std(top1)} ({min(top1):.4f}..{max(top1):.4f}), "
            f"rot top-1 {_mean_std(rot)} ({min(rot):.4f}..{max(rot):.4f}), n = {len(top1)}")
    lines += [f"  {claim['text']}: {claim['verdict']}" for claim in spread["claims"]]
    return lines


def _mean_std(values):
    mean = float(np.mean(values))
    if len(values) < 2:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {float(np.std(values, ddof=1)):.4f}"


def format_table(rows) -> str:
    """A plain-text table of the demo's result rows."""
    cells = [[title for _, title, _ in COLUMNS]]
    cells += [[fmt.format(row[key]) for key, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(line, widths))) for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


# What a training run writes (cbcn_tf.training); the only entries a rerun removes.
_RUN_FILES = (config_lib.CONFIG_FILE, training.HISTORY_FILE, training.MODEL_FILE,
              training.SUMMARY_FILE, training.CURVES_FILE)
_RUN_DIRS = (training.BACKUP_DIR, training.TENSORBOARD_DIR)


def _check_previous_run(run_dir, config):
    """Refuse a folder that exists but does not hold this demo arm's earlier run."""
    if not os.path.exists(run_dir):
        return
    config_path = os.path.join(run_dir, config_lib.CONFIG_FILE)
    saved = None
    if os.path.isdir(run_dir) and os.path.isfile(config_path):
        try:
            saved = config_lib.read_config(config_path)
        except ConfigError:
            saved = None
    if saved is None or (saved.model, saved.dataset) != (config.model, config.dataset):
        raise ConfigError(f"{run_dir} exists but is not a demo run; choose another --output "
                          "(the demo replaces only its own earlier runs).")


def _make_output_folder(output_dir):
    """Create ``output_dir`` and check that a file can be created in it, before any arm trains;
    a read-only or full disk is one `OutputError`, and the folders this call created are
    removed again."""
    top = os.path.abspath(output_dir)
    while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    created = not os.path.exists(top)
    try:
        os.makedirs(output_dir, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".cbcn-demo-", suffix=".tmp", dir=output_dir)
        os.close(handle)
        os.remove(probe)
    except OSError as exc:
        if created:
            shutil.rmtree(top, ignore_errors=True)
        raise OutputError(exc.errno, f"Cannot write the demo into {output_dir}: "
                          f"{files.os_error_hint(exc)}") from None


def _remove_previous_run(run_dir):
    """Remove the run files of an earlier demo run; anything else in the folder stays."""
    if not os.path.isdir(run_dir):
        return
    for name in _RUN_DIRS:
        shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    for name in _RUN_FILES:
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            os.remove(path)


def _test_images():
    images, labels = zip(*data_lib.load_dataset("digits", "test", batch_size=512))
    return np.concatenate(images), np.concatenate(labels)


def _export_cbcn(model, output_dir, images, labels, print_fn):
    try:
        import larq_compute_engine as lce
        from cbcn_tf.converters import export_lce
    except ImportError as exc:
        print_fn(f"LCE export skipped: {exc}")
        return
    path = os.path.join(output_dir, "cbcn.tflite")
    result = export_lce(model, path)
    print_fn(f"\nLCE export: {path}, {result.bytes / 1024:,.1f} KiB, "
             f"{result.ops.get('LceBconv2d', 0)} LceBconv2d ops for "
             f"{len(result.binary_layers)} binary convs")
    # Parity on the real test images (the exporter's own check uses random inputs).
    with open(path, "rb") as handle:
        lce_probs = lce.testing.Interpreter(handle.read(), num_threads=1).predict(images)
    keras_probs = model.predict(images, verbose=0)
    print_fn(f"Parity on {len(labels)} test images: max |LCE - Keras| = "
             f"{np.max(np.abs(lce_probs - keras_probs)):.2e}; top-1 LCE "
             f"{np.mean(lce_probs.argmax(1) == labels):.4f} vs Keras "
             f"{np.mean(keras_probs.argmax(1) == labels):.4f}")
