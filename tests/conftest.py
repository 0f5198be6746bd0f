"""Shared test setup: Keras 2 via cbcn_tf, two logical CPUs for MirroredStrategy tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cbcn_tf  # noqa: E402,F401  (sets TF_USE_LEGACY_KERAS before tf.keras is touched)
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import; tests needing 2 will skip
    pass


@pytest.fixture
def two_cpu_strategy():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices configured before TF initialised")
    # ReductionToOneDevice: collective all-reduce keys of two MirroredStrategy objects in one
    # process can collide (TF), and the training tests build their own strategy.
    return tf.distribute.MirroredStrategy(devices[:2],
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


# --- shared helpers --------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 28 KiB tmpfs (a real full disk: a run's config and summary fit, its first checkpoint
    does not), unmounted afterwards; skips where mounting is not allowed."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=28k", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


# A tiny CBCN LeNet (kernel stage 2-2-2-2, K = 2) on the packaged digits: seconds per run.
TINY_SETS = ("model=cbcn_lenet", "model_kwargs.kernel_stage=[2, 2, 2, 2]",
             "model_kwargs.orientations=2", "batch_size=16", "steps_per_epoch=3", "epochs=1",
             "tensorboard=false")


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(*overrides)``: the digits_demo recipe with TINY_SETS, then ``overrides``."""
    from cbcn_tf import config as config_lib

    def make(*overrides):
        return config_lib.load_config("digits_demo", [*TINY_SETS, *overrides])

    return make


@pytest.fixture(scope="session")
def run_cli():
    """``run_cli(*args)``: `cbcn` in-process; argparse's own errors raise SystemExit, ours
    return the code."""
    from cbcn_tf import cli

    def run(*args):
        try:
            return cli.main([str(a) for a in args])
        except SystemExit as exit_:
            return exit_.code

    return run


@pytest.fixture(scope="session")
def train_cli(run_cli):
    """``train_cli(output, *sets, recipe="digits_demo", extra=())``: `cbcn train` of the tiny
    config with more ``--set`` values and other arguments (``extra``)."""

    def train(output, *sets, recipe="digits_demo", extra=()):
        return run_cli("train", "--config", recipe, "--output", output, "--verbose", "0",
                       *[a for s in (*TINY_SETS, *sets) for a in ("--set", s)], *extra)

    return train


@pytest.fixture(scope="session")
def tiny_run(train_cli, tmp_path_factory):
    """A finished one-epoch run of the tiny config (seed 3), read by several tests."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert train_cli(run, extra=["--seed", "3"]) == 0
    return run


@pytest.fixture
def error_line(capsys):
    """``error_line()``: the single ``cbcn: error: ...`` line the command printed."""

    def read():
        err = capsys.readouterr().err.strip()
        assert err.startswith("cbcn: error: ") and "\n" not in err, err
        return err

    return read


@pytest.fixture(scope="session")
def make_folder():
    """``make_folder(root, sizes, classes, split, mode)``: random JPEGs in
    ``root/split/<class>/<i>.jpg``, one per size (width, height) and class."""
    import numpy as np
    from PIL import Image

    def make(root, sizes=((8, 8),) * 3, classes=("cat", "dog"), split="train", mode="RGB"):
        rng = np.random.default_rng(0)
        for cls in classes:
            os.makedirs(root / split / cls, exist_ok=True)
            for i, (w, h) in enumerate(sizes):
                pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).convert(mode).save(root / split / cls / f"{i}.jpg",
                                                           quality=95)
        return root

    return make


@pytest.fixture(scope="session")
def subprocess_env():
    """``subprocess_env(**extra)``: the environment of a `cbcn` subprocess (Keras 2, quiet,
    no GPU, no inherited TF_CONFIG) plus ``extra``."""

    def env(**extra):
        values = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3",
                  "CUDA_VISIBLE_DEVICES": ""}
        values.pop("TF_CONFIG", None)
        values.update(extra)
        return values

    return env


# --- markers (registered in pytest.ini) ------------------------------------------------------

# Fixtures that start a process: a test using one is marked `subprocess`.
SUBPROCESS_FIXTURES = frozenset({"subprocess_env", "small_tmpfs"})


def _uses_module_fixture(item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    return any(defs and defs[-1].scope == "module"
               for defs in getattr(info, "name2fixturedefs", {}).values())


def pytest_collection_modifyitems(config, items):
    grouping = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if SUBPROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.subprocess)
        # pytest-xdist `--dist loadgroup` (make test): the tests sharing a module-scoped
        # fixture (a trained run, killed and restarted runs, an exported file) run on one
        # worker, so the fixture is built once instead of once per worker.
        if grouping and _uses_module_fixture(item):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
