"""Training step time of the CIFAR CBCN with Keras / tf.data speed options, side by side.

Variants (config keys of `cbcn_tf.config.TrainConfig`, applied to the campaign's CIFAR-10
recipe ``benchmarks/recipes/cifar10_resnet18.yaml``, the CBCN K = 4): the current default, XLA
(``jit_compile``), several steps per call (``steps_per_execution``), the decoded source images
kept in memory (``cache``; filled by one full pass before timing) and all three together.
Every variant's model, optimizer and pipeline are built the way ``cbcn train`` builds them;
each round times ``--steps`` training steps of every variant after ``--warmup`` steps (the
shuffle-buffer fill, tracing and XLA compilation are excluded), variants interleaved in a
rotating order so load from other jobs hits all of them alike. Reported: the median over
rounds of ms / step, and the median of the per-round ratios to the default.

Usage:
    python benchmarks/speed_options.py --rounds 3 --steps 60
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(HERE, "recipes", "cifar10_resnet18.yaml")
# The campaign's data root (benchmarks/reproduce.py --data-root) holds the ImageFolder copy.
CIFAR = os.path.join(os.environ.get("CBCN_DATA", "."), "cifar10")
OUT = os.path.join(HERE, "results", "speed_options.json")

VARIANTS = {
    "default": [],
    "jit_compile": ["jit_compile=true"],
    "steps_per_execution=20": ["steps_per_execution=20"],
    "cache": ["cache=true"],
    "all three": ["jit_compile=true", "steps_per_execution=20", "cache=true"],
}


class _StepTimer:
    """Keras callback factory: wall time from the end of step ``warmup`` to the last step."""

    def __new__(cls, warmup):
        import tensorflow as tf

        class Timer(tf.keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.start = self.end = None
                self.first = self.last = None

            def on_train_batch_end(self, batch, logs=None):
                now = time.perf_counter()
                if batch + 1 >= warmup and self.start is None:
                    self.start, self.first = now, batch + 1
                self.end, self.last = now, batch + 1

        return Timer()


def build(overrides, data_dir):
    import tensorflow as tf

    from cbcn_tf import config as config_lib
    from cbcn_tf import training

    config = training.resolve_config(config_lib.load_config(
        RECIPE, [f"data_dir={data_dir}", *overrides]))
    tf.keras.utils.set_random_seed(config.seed)
    model = training.build_model(config)
    training.add_weight_decay(model, config.weight_decay, config.weight_decay_scope)
    training.compile_for_classification(model, training.make_optimizer(config),
                                        jit_compile=config.jit_compile,
                                        steps_per_execution=config.steps_per_execution)
    data = training.make_input_fn(config, training=True, epochs=(0, 1))(
        tf.distribute.InputContext())
    if config.cache:  # fill the in-memory cache with one full pass, as epoch 1 would
        for _ in data:
            pass
    return model, data.repeat(), config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per round")
    parser.add_argument("--data", default=CIFAR,
                        help="CIFAR-10 ImageFolder root (default: $CBCN_DATA/cifar10)")
    parser.add_argument("--out", default=OUT)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    import cbcn_tf  # noqa: F401  (Keras 2 first)
    from cbcn_tf import files

    names = args.variants.split(",")
    built = {}
    for name in names:
        print(f"building {name}", flush=True)
        built[name] = build(VARIANTS[name], args.data)
    times = {name: [] for name in names}
    load = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            model, data, _ = built[name]
            timer = _StepTimer(args.warmup)
            model.fit(data, epochs=1, steps_per_epoch=args.warmup + args.steps, verbose=0,
                      callbacks=[timer])
            ms = 1000 * (timer.end - timer.start) / (timer.last - timer.first)
            times[name].append(ms)
            print(f"round {r + 1} {name}: {ms:.0f} ms/step", flush=True)
        load.append(os.getloadavg()[0])
    base = times[names[0]]
    results = []
    for name in names:
        ratios = [t / b for t, b in zip(times[name], base)]
        results.append(dict(variant=name, overrides=VARIANTS[name],
                            median_ms_per_step=statistics.median(times[name]),
                            ms_per_step=times[name], median_ratio=statistics.median(ratios)))
    command = "python benchmarks/speed_options.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    payload = dict(command=command, rounds=args.rounds, steps=args.steps, warmup=args.warmup,
                   load_average_1min=load, results=results)
    files.write_text(args.out, json.dumps(payload, indent=1) + "\n")
    for row in results:
        print(f"{row['variant']:>24}: {row['median_ms_per_step']:.0f} ms/step, "
              f"x{row['median_ratio']:.2f} of the default")


if __name__ == "__main__":
    main()
