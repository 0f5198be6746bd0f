"""The sections of BENCHMARKS.md beside the accuracy tables: Table 2's recipe check, the
slow-start ablation, the optimizer check, BatchNorm statistics (moving averages against
re-estimated), the packaged weights, training and layer speed, LCE deployment; and the demo's
seed spread (``cbcn_tf/demo_spread.json``).
"""
from __future__ import annotations

import json
import os
import statistics

from campaign import plots
from campaign.cells import ADOPTED_RECIPE, MNIST_ARMS, RECIPE_CANDIDATES, arm_recipe
from campaign.ledger import portable_command
from campaign.report_tables import (CLAIMS, RESULTS, ROOT, fmt, group_rows, mean_std,
                                    notes_lines, read_json, scores, stage_key, verdict)
from cbcn_tf import files

SLOW_START_PNG = os.path.join(RESULTS, "slow_start.png")
SLOW_START_TEXT = os.path.join(RESULTS, "slow_start_notes.md")
OPTIMIZER_NOTES = os.path.join(RESULTS, "optimizer_check_notes.md")
CONVERGED_NOTES = os.path.join(RESULTS, "converged_notes.md")
PRETRAINED = os.path.join(ROOT, "models", "weights", "registry.json")
PAPER_ERROR = {("cbcn_lenet", False): 1.91, ("xnor_lenet", False): 3.76,
               ("cbcn_lenet_float", False): 0.91, ("cbcn_lenet", True): 5.76}
# The one package-data file the benchmarks write; `cbcn demo` prints it beside its one run.
DEMO_SPREAD = os.path.join(ROOT, "cbcn_tf", "demo_spread.json")
DEMO_LABELS = {"cbcn": "CBCN K=4", "xnor": "XNOR K=1", "float": "Full precision"}  # demo.ARMS
GENERATED_BY = "python benchmarks/report.py"


def slow_start_section(rows, png=SLOW_START_PNG) -> list:
    """Validation curves of the ablation arms: early epochs per arm (mean over seeds), the
    final score, and verdicts against the paper-faithful CBCN; plus a figure."""
    groups = {k: v for k, v in group_rows(rows).items() if k[0] == "ablation_digits"}
    if not groups:
        return []
    arms = {}
    for (_, stage, _, epochs), by_arm in sorted(groups.items()):
        for arm, arm_rows in by_arm.items():
            arms[arm] = (stage, epochs, arm_rows)
    arms = dict(sorted(arms.items(), key=lambda item: item[0] != "cbcn"))  # the baseline first
    base = arms.get("cbcn")
    early = (1, 2, 3, 4)
    lines = ["## Why does CBCN start slowly? Ablations on a validation split", "",
             "Digits (`digits_demo` recipe: Adam lr 0.005, batch 32, 16 epochs, kernel stage "
             "4-4-8-16, K = 4), trained on 80% of the training split and scored on the other "
             "20% (`validation_fraction=0.2`); the test split is not used. Each arm changes one "
             "thing of the paper-faithful CBCN (`cbcn`), the last three are the references at "
             "the same feature widths. Command: `python benchmarks/reproduce.py --only ablation "
             "--ledger benchmarks/results/ablation.csv` (rows in that file).", "",
             "| arm | kernel stage | n | " + " | ".join(f"val top-1 % after epoch {e}"
                                                      for e in early)
             + " | final val top-1 % | epoch 3 vs cbcn | final vs cbcn |",
             "|---|---|---:|" + "---:|" * len(early) + "---:|---|---|"]
    for arm, (stage, epochs, arm_rows) in arms.items():
        curves = [plots.curve(r) for r in arm_rows]
        cells = []
        for e in early:
            values = [c[e - 1] for c in curves if len(c) >= e]
            cells.append(fmt(values, "accuracy") if values else "")
        final = scores(arm_rows, "upright")
        if base is None or arm == "cbcn":
            v3 = vfinal = ""
        else:
            b_curves = [plots.curve(r) for r in base[2]]
            v3 = verdict([c[2] for c in curves if len(c) > 2],
                         [c[2] for c in b_curves if len(c) > 2])
            vfinal = verdict(final, scores(base[2], "upright"))
        lines.append(f"| {arm} | {stage} | {len(arm_rows)} | " + " | ".join(cells)
                     + f" | {fmt(final, 'accuracy')} | {v3} | {vfinal} |")
    lines += ["", "Verdicts compare every seed of the arm with every seed of `cbcn` "
              "(\"holds\": the arm is above in every seed).", ""]
    if png:
        plots.plot_slow_start(arms, png)
        lines += [f"![validation curves of the ablation arms](benchmarks/results/"
                  f"{os.path.basename(png)})", ""]
    lines += notes_lines(SLOW_START_TEXT)
    return lines


def recipe_check_lines(rows) -> list:
    """The recipe check (table ``table2_mnist_recipes``): per arm and candidate the validation
    error at the end (mean over seeds) and the best epoch of the mean curve; which candidate
    ends lowest; the one adopted."""
    found = {}
    for row in rows:
        if row["table"] == "table2_mnist_recipes" and not row.get("steps_per_epoch"):
            arm, candidate = arm_recipe(row["arm"])
            found.setdefault(arm, {}).setdefault(candidate, []).append(row)
    if not found:
        return []
    lines = ["Recipe check at 50 epochs (`python benchmarks/reproduce.py --only "
             "mnist_recipe_check`; 5-10-20-40, upright; error % on 10,000 validation images "
             "carved from the training split, never the test split; candidates in "
             "`RECIPE_CANDIDATES`, each applied to every arm alike; `paper` is the paper's "
             "reading). Each entry: the validation error at the end (n seeds; the best epoch "
             "of the mean curve: its error).", "",
             "| arm | " + " | ".join(RECIPE_CANDIDATES) + " | lowest at the end |",
             "|---|" + "---:|" * len(RECIPE_CANDIDATES) + "---|"]
    order = {arm: index for index, arm in enumerate(MNIST_ARMS)}
    for arm, by_candidate in sorted(found.items(), key=lambda item: order.get(item[0], 99)):
        texts, ends = [], {}
        for candidate in RECIPE_CANDIDATES:
            got = by_candidate.get(candidate)
            if not got:
                texts.append("not run yet")
                continue
            if mean_std(scores(got, "upright"))[0] is not None:  # not diverged
                ends[candidate] = mean_std(scores(got, "upright"))[0]
            curves = [[float(v) for v in r["val_curve"].split()] for r in got]
            mean = [statistics.fmean(c) for c in zip(*curves)]
            best = max(range(len(mean)), key=mean.__getitem__) if mean else None
            texts.append(fmt(scores(got, "upright"), "error") + f" (n = {len(got)}" + (
                f"; epoch {best + 1}: {100 - 100 * mean[best]:.2f})" if mean else ")"))
        lowest = f"{max(ends, key=ends.get)} (of {len(ends)} run)" if ends else ""
        lines.append(f"| {arm} | " + " | ".join(texts) + f" | {lowest} |")
    return lines + ["", f"Adopted for every arm alike: `{ADOPTED_RECIPE}` (`ADOPTED_RECIPE`; its "
                    f"cells are Table 2's 50-epoch cells again, arms `ARM_{ADOPTED_RECIPE}`, "
                    "group `mnist_adopted`).", ""]


def optimizer_section(rows, ledger=()) -> list:
    """The MNIST budget check (benchmarks/optimizer_check.py): the Table 2 LeNets' first
    epochs under the campaign's SGD reading and under Adam, training and test accuracy; and
    the Table 2 cells' training accuracy at their last epoch (ledger ``train_curve``)."""
    if not rows:
        return []
    epochs = sorted({int(r["epoch"]) for r in rows})
    lines = ["## Why are the binary LeNets at about 90% after 8 epochs? An optimizer check", "",
             "The Table 2 LeNets (kernel stage 5-10-20-40, K = 4, upright, seed 0), trained "
             f"{max(epochs)} epochs with the campaign recipe and with only the optimizer changed "
             "to Adam lr 0.001. Train: accuracy on the training split as Keras logs it during "
             "the epoch (dropout on); test: the 10,000 test images after the epoch. Command: "
             "`python benchmarks/optimizer_check.py` (rows and per-cell `cbcn train` commands "
             "in `benchmarks/results/optimizer_check.csv`).", "",
             "| arm | optimizer | " + " | ".join(f"train / test top-1 % after epoch {e}"
                                                 for e in epochs) + " |",
             "|---|---|" + "---:|" * len(epochs)]
    cells = {}
    for row in rows:
        cells.setdefault((row["arm"], row["optimizer"]), {})[int(row["epoch"])] = row
    for (arm, optimizer), by_epoch in cells.items():
        values = [f"{100 * float(by_epoch[e]['train_accuracy']):.1f} / "
                  f"{100 * float(by_epoch[e]['test_accuracy']):.1f}" if e in by_epoch else ""
                  for e in epochs]
        label = "SGD m0.9 lr 0.01 (recipe)" if optimizer == "sgd" else "Adam lr 0.001"
        lines.append(f"| {arm} | {label} | " + " | ".join(values) + " |")
    lines.append("")
    last = {}
    for row in ledger:
        if (row["table"], row["kernel_stage"], row["protocol"]) == (
                "table2_mnist", "5-10-20-40", "upright") and row.get("train_curve"):
            last.setdefault(row["arm"], []).append(float(row["train_curve"].split()[-1]))
    if last:
        epochs_run = sorted({r["epochs"] for r in ledger if r["table"] == "table2_mnist"})
        lines += ["Training accuracy at the last epoch of the Table 2 cells (5-10-20-40, upright, "
                  f"{'/'.join(epochs_run)} epochs; ledger column `train_curve`): "
                  + ", ".join(f"{arm} {fmt(values, 'accuracy')} % (n = {len(values)})"
                              for arm, values in sorted(last.items())) + ".", ""]
    lines += notes_lines(OPTIMIZER_NOTES)
    return lines


def precise_bn_section(rows) -> list:
    """The cells whose ledger rows hold a score with Keras' moving BN averages beside the one
    with statistics re-estimated at the final weights: both, per seed."""
    paired = [r for r in rows if r.get("top1_moving_bn") and not r.get("steps_per_epoch")]
    if not paired:
        return []
    lines = ["## BatchNorm statistics: moving averages vs re-estimated at the final weights", "",
             "Cells trained with Keras' moving BN averages (momentum 0.9), scored with them and "
             "again after re-estimating every BN layer's statistics on 50 training batches at "
             "the same weights (ledger columns `top1_moving_bn`, `rot_top1_moving_bn` beside "
             "`top1`, `rot_top1`; weights unchanged). Every other ledger row is scored with "
             "re-estimated statistics only.", "",
             "| table | kernel stage | protocol | arm | seed | top-1 % moving | top-1 % "
             "re-estimated | rotated moving | rotated re-estimated |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]

    def order(r):
        return r["table"], stage_key(r["kernel_stage"]), r["protocol"], r["arm"], int(r["seed"])

    for r in sorted(paired, key=order):
        lines.append(f"| {r['table']} | {r['kernel_stage']} | {r['protocol']} | {r['arm']} | "
                     f"{r['seed']} | {100 * float(r['top1_moving_bn']):.2f} | "
                     f"{100 * float(r['top1']):.2f} | {100 * float(r['rot_top1_moving_bn']):.2f} | "
                     f"{100 * float(r['rot_top1']):.2f} |")
    lines.append("")
    return lines


def pretrained_section(registry=PRETRAINED, tflite=None) -> list:
    """The packaged weights (models/weights/registry.json) and the packaged LCE model."""
    if not os.path.exists(registry):
        return []
    with open(registry, encoding="utf-8") as handle:
        rows = json.load(handle)
    lines = ["## Trained weights that ship with the package", "",
             "`create_model(\"cbcn_lenet\", weights=\"mnist\")` (the full-precision twin: "
             "`binary=False` with the same weights name), or `NAME:WEIGHTS` on the command "
             "line (`cbcn evaluate cbcn_lenet:mnist --data-dir MNIST`); each file comes from "
             "the ledger cell named by its command and is checked by sha256 before it loads. "
             "Test error of the packaged file on the 10,000 MNIST test images (rotated: "
             "MNIST-rot angles), as `cbcn evaluate` computes it; `tests/test_pretrained.py` "
             "checks each number.", "",
             "| NAME:WEIGHTS | data | test error % | paper | seed | epochs | recipe |",
             "|---|---|---:|---:|---:|---:|---|"]
    for row in rows:
        paper = PAPER_ERROR.get((row["name"], row["rotate"]), "")
        lines.append(f"| `{row['name']}:{row['weights']}` | {row['dataset']}"
                     f"{'-rot' if row['rotate'] else ''} | {row['test_error']:.2f} | {paper} | "
                     f"{row['seed']} | {row['epochs']} | `{row['recipe']}` |")
    lines += ["", "Commands: " + "; ".join(f"`{portable_command(row['command'])}`"
                                          for row in rows) + ".", ""]
    tflite = tflite or read_json("pretrained_tflite.json")
    if tflite:
        ops = ", ".join(f"{name} x{count}" for name, count in sorted(tflite["ops"].items()))
        lines += [f"The packaged LCE model `models/weights/cbcn_lenet_mnist.tflite` "
                  f"({tflite['bytes'] / 1024:.1f} KiB; ops: {ops}): on the {tflite['images']:,} "
                  f"MNIST test images its top-1 agrees with Keras' on "
                  f"{100 * tflite['top1_agreement']:.2f}% of them (top-1 "
                  f"{100 * tflite['lce_top1']:.2f}% vs Keras {100 * tflite['keras_top1']:.2f}%), "
                  "largest probability difference "
                  f"{tflite['max_abs_prob_diff']:.1e}. Command: `{tflite['command']}`.", ""]
    return lines


def speed_options_section(result) -> list:
    """Training step time of the CIFAR CBCN under the speed options (speed_options.py's JSON,
    None if not measured)."""
    if not result:
        return []
    lines = ["## Training speed options (CIFAR-10 CBCN, kernel stage 4-4-8-16, batch 128)", "",
             f"Command: `{result['command']}`: {result['rounds']} rounds, each timing "
             f"{result['steps']} training steps of every variant after {result['warmup']} "
             "untimed ones (shuffle-buffer fill, tracing, XLA compilation), variants interleaved "
             "in a rotating order; one process, the models built as `cbcn train` builds them. "
             "1-minute load average during the run: "
             f"{', '.join(f'{v:.1f}' for v in result['load_average_1min'])} (2 cores, shared "
             "with the campaign and other jobs, so absolute times are inflated; the ratios "
             "compare variants under the same load).", "",
             "| variant | config overrides | ms / step (median) | per round | ratio to default "
             "(median of rounds) |", "|---|---|---:|---|---:|"]
    for row in result["results"]:
        lines.append(f"| {row['variant']} | {' '.join(row['overrides']) or '(none)'} | "
                     f"{row['median_ms_per_step']:.0f} | "
                     f"{', '.join(f'{v:.0f}' for v in row['ms_per_step'])} | "
                     f"{row['median_ratio']:.2f} |")
    lines.append("")
    lines += notes_lines(os.path.join(RESULTS, "speed_options_notes.md"))
    return lines


def layer_speed_section(rows, command) -> list:
    """CBConv2D against larq's QuantConv2D at equal channels (layer_speed.py's rows)."""
    if not rows:
        return []
    lines = ["## Layer overhead: the CiF expansion and CBP", "",
             "CBConv2D (stores W, expands it to E on every call, CBP as its gradient) against "
             "larq's QuantConv2D with the same expanded channel counts, same quantizers. "
             "Interleaved runs, median of per-round ratios.", "",
             "| input | channels | K | mode | CBConv2D ms | QuantConv2D ms | ratio |",
             "|---|---|---|---|---:|---:|---:|"]
    lines += [f"| {r['input']} | {r['channels']} | {r['K']} | {r['mode']} | "
              f"{float(r['cbconv_ms']):.1f} | {float(r['quantconv_ms']):.1f} | "
              f"{float(r['median_ratio']):.3f} |" for r in rows]
    return lines + ["", f"Command: `{command}` (batch 64); table also in "
                    "`benchmarks/results/layer_speed.md`.", ""]


def lce_section(latency) -> list:
    """LCE latency and size (lce_latency.py's JSON and its markdown report, nested here)."""
    if not latency:
        return []
    with open(os.path.join(RESULTS, "lce_latency.md")) as handle:
        body = handle.read().split("# LCE latency on this host", 1)[1].strip().splitlines()
    # Nest the included report's headings under this file's sections.
    body = ["#" + line if line.startswith("## ") else line for line in body]
    return ["## LCE deployment: latency and size", "",
            f"Command: `{latency['command']}` (full output in "
            "`benchmarks/results/lce_latency.md`).", "", *body, ""]


def demo_spread(rows):
    """What ``cbcn demo`` prints beside its one run: per arm the scores of every seed of the
    demo's setting in the ledger, and the verdicts of the demo's claims (None: no demo cells)."""
    groups = {k: v for k, v in group_rows(rows).items() if k[0] == "demo_digits"}
    if not groups:
        return None
    (_, _, _, epochs), arms = max(groups.items(), key=lambda item: sum(map(len, item[1].values())))
    spread = dict(generated_by=GENERATED_BY, recipe="digits_demo", epochs=int(epochs),
                  command="python benchmarks/reproduce.py --only demo", arms=[], claims=[])
    for arm, label in DEMO_LABELS.items():
        if arm in arms:
            spread["arms"].append(dict(arm=arm, label=label,
                                       seeds=[int(r["seed"]) for r in arms[arm]],
                                       top1=scores(arms[arm], "upright"),
                                       rot_top1=scores(arms[arm], "rotated")))
    for table, _, _, score, better, worse, text, _ in CLAIMS:
        if table == "demo_digits" and better in arms and worse in arms:
            spread["claims"].append(dict(text=text, verdict=verdict(
                scores(arms[better], score), scores(arms[worse], score))))
    return spread


def write_demo_spread(rows, path=DEMO_SPREAD) -> None:
    """Write `demo_spread` of the ledger ``rows`` to ``path`` atomically (nothing without demo
    cells). The file is generated: `GENERATED_BY` rebuilds it, and says so in the file."""
    spread = demo_spread(rows)
    if spread is not None:
        files.write_text(path, json.dumps(spread, indent=1) + "\n")
