"""Package trained weights from finished ledger cells into ``models/weights/``.

For each entry of ``PACKAGES`` the cell's run folder (below ``--runs-dir``, as its ledger row's
``run_dir`` names it) is loaded, its weights are copied into a fresh zoo model and written as
``NAME_WEIGHTS.h5`` (Keras HDF5 weights); the packaged file is scored again on the cell's
split (rotated for the rotated protocol) with `cbcn_tf.training.evaluate`, exactly as
``cbcn evaluate NAME:WEIGHTS`` scores it, and ``registry.json`` records its sha256, command, recipe, seed,
epochs and that test error. Every file is written atomically; the registry last.

Usage (the MNIST IDX files are read offline from --data-dir):
    python benchmarks/package_weights.py --runs-dir RUNS --data-dir MNIST_IDX_FOLDER
    python benchmarks/package_weights.py ... --seed 0 --epochs 50 --recipe adopted

``--recipe adopted`` (the default) packages the cells trained with the recipe Table 2 adopted
(``ARM_adam_cosine``); ``--recipe paper`` the cells of the paper's own reading.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PRETRAINED = os.path.join(ROOT, "models", "weights")
sys.path.insert(0, HERE)

# (Table 2 arm, protocol) -> weights name; the model's name comes from the trained model.
PACKAGES = {("cbcn", "upright"): "mnist", ("xnor", "upright"): "mnist",
            ("fp", "upright"): "mnist", ("cbcn", "rotated"): "mnist_rot"}
STAGE = (5, 10, 20, 40)  # the LeNet defaults, so create_model(..., weights=...) needs no kwargs


def _cells(seed, epochs, recipe="adopted"):
    """(cell, weights name) per entry of `PACKAGES`, from the 50-epoch Table 2 cells trained
    with ``recipe``: ``"adopted"`` (arms ``ARM_adam_cosine``) or ``"paper"``."""
    from campaign.cells import adopted_cells, arm_recipe, converged_cells

    source = adopted_cells if recipe == "adopted" else converged_cells
    cells = {(arm_recipe(c.arm)[0], c.protocol): c for c in source(epochs, seeds=seed + 1)
             if c.seed == seed and c.kernel_stage == STAGE}
    return [(cells[key], weights) for key, weights in PACKAGES.items() if key in cells]


def package(cell, weights, row, run_dir, data_dir) -> dict:
    """Write one weights file; its registry row."""
    from cbcn_tf import files, training
    from cbcn_tf.models import create_model, pretrained

    config = training.resolve_config(_config(cell))
    kwargs = {k: v for k, v in config.model_kwargs.items()
              if k in ("binary",) and v is not True}
    trained = training.load_model(run_dir)
    model = create_model(config.model, **kwargs)
    if model.name != trained.name:
        raise SystemExit(f"{run_dir} holds {trained.name}, not {model.name}")
    model.set_weights(trained.get_weights())
    name = f"{model.name}_{weights}.h5"
    path = os.path.join(PRETRAINED, name)
    files.atomic_write(path, lambda tmp: model.save_weights(tmp, save_format="h5"))
    rotate = cell.protocol == "rotated"
    entry = dict(name=model.name, weights=weights, function=config.model, kwargs=kwargs,
                 file=name, sha256=pretrained.sha256(path), dataset=config.dataset,
                 rotate=rotate, split=config.eval_split, recipe=_recipe_name(cell),
                 seed=cell.seed, epochs=cell.epochs,
                 command=row["command"])
    # Score what was written, through the same path as `cbcn evaluate NAME:WEIGHTS`.
    reloaded = create_model(config.model, **kwargs)
    reloaded.load_weights(path)
    scores = training.evaluate(reloaded, config.dataset, split=config.eval_split,
                               rotate=rotate, data_dir=data_dir, batch_size=EVAL_BATCH)
    images = IMAGES[config.eval_split]
    errors = images - round(scores["top1"] * images)
    entry.update(test_error=round(100.0 * errors / images, 2), errors=errors, images=images)
    print(f"{model.name}:{weights}  {entry['test_error']:.2f}% ({errors} of {images}) "
          f"<- {run_dir}; ledger top-1 {row['top1']}")
    return entry


EVAL_BATCH = 128  # `cbcn evaluate`'s default batch size
IMAGES = {"test": 10_000}


def _recipe_name(cell) -> str:
    """The recipe file and, for an arm trained with a recipe-check candidate, its name."""
    from campaign.cells import arm_recipe

    candidate = arm_recipe(cell.arm)[1]
    path = os.path.relpath(cell.recipe, ROOT)
    return f"{path} ({candidate})" if candidate else f"{path} (paper)"


def _config(cell):
    from campaign.cells import cell_config

    return cell_config(cell)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", required=True, help="the campaign's run folders")
    parser.add_argument("--data-dir", required=True, help="folder with the MNIST IDX files")
    parser.add_argument("--seed", type=int, default=0, help="which seed's cells to package")
    parser.add_argument("--epochs", type=int, default=50, help="which budget's cells")
    parser.add_argument("--recipe", choices=("adopted", "paper"), default="adopted",
                        help="package the cells of the adopted recipe (default) or the paper's")
    parser.add_argument("--ledger", default=None, help="default: the campaign ledger")
    args = parser.parse_args(argv)

    import cbcn_tf  # noqa: F401  (Keras 2 before anything touches tf.keras)
    from campaign import ledger
    from cbcn_tf import files

    rows = {ledger.row_key(r): r for r in ledger.read_ledger(args.ledger or ledger.LEDGER)}
    entries = []
    for cell, weights in _cells(args.seed, args.epochs, args.recipe):
        row = rows.get(cell.key())
        run_dir = ledger.trained_run_dir(cell, row, args.runs_dir) if row else None
        if run_dir is None:
            print(f"skipped {cell.run_name()}: not in the ledger or no run folder")
            continue
        entries.append(package(cell, weights, row, run_dir, os.path.abspath(args.data_dir)))
    registry = os.path.join(PRETRAINED, "registry.json")
    new = {(e["name"], e["weights"]) for e in entries}
    kept = []
    if os.path.exists(registry):  # entries packaged before (other cells) stay
        kept = [e for e in json.load(open(registry, encoding="utf-8"))
                if (e["name"], e["weights"]) not in new]
    files.write_text(registry, json.dumps(kept + entries, indent=1) + "\n")
    print(f"Wrote {registry}: {len(entries)} new, {len(kept)} kept")
    return 0 if entries else 1


if __name__ == "__main__":
    sys.exit(main())
