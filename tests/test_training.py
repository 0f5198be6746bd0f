"""Training API: schedules, weight decay, center loss, configs, and train / resume / reload."""
import os

import cbcn_tf  # noqa: F401  (Keras 2 before tensorflow)
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from cbcn_tf import config as config_lib
from cbcn_tf import training

# --- schedules -------------------------------------------------------------------------------


def test_cifar_schedule_matches_released_code():
    schedule = training.lr_schedule(config_lib.load_config("cifar10_resnet18_k4"))
    rates = [schedule(epoch) for epoch in (0, 59, 60, 120, 160, 199)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.02, 0.004, 0.0008, 0.0008], rtol=1e-12)


def test_imagenet_schedule_drops_every_20_epochs():
    schedule = training.lr_schedule(config_lib.load_config("imagenet_resnet18"))
    rates = [schedule(epoch) for epoch in (0, 19, 20, 39, 40, 60, 69)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 0.001, 0.0001, 0.0001], rtol=1e-12)


# --- weight decay ----------------------------------------------------------------------------


def _mixed_model():
    inputs = tf.keras.Input((6, 6, 4))
    x = tf.keras.layers.Conv2D(4, 3, name="float_conv")(inputs)
    x = tf.keras.layers.BatchNormalization(name="bn")(x)
    x = lq.layers.QuantConv2D(4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              name="binary_conv")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="dense")(x))


@pytest.mark.parametrize("scope, layers", [
    ("all", None),
    ("kernels", ("float_conv", "binary_conv", "dense")),
    ("float_kernels", ("float_conv", "dense")),
])
def test_weight_decay_is_half_l2_of_latent_weights(scope, layers):
    model = _mixed_model()
    model.get_layer("bn").gamma.assign(np.full(4, 3.0, np.float32))  # non-zero, unlike beta
    if layers is None:
        variables = [getattr(v, "latent_variable", v) for v in model.trainable_variables]
    else:
        variables = [model.get_layer(name).kernel.latent_variable
                     if name == "binary_conv" else model.get_layer(name).kernel for name in layers]
    expected = 5e-4 / 2 * sum(np.sum(np.square(v.numpy())) for v in variables)
    training.add_weight_decay(model, 5e-4, scope)
    (loss,) = model.losses
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


# --- center loss -----------------------------------------------------------------------------


def test_center_loss_and_centre_steps_match_numpy():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(6, 5)).astype(np.float32)
    labels = np.array([0, 2, 2, 1, 0, 2])
    centers = rng.normal(size=(4, 5)).astype(np.float32)  # class 3 absent from the batch

    expected = sum(np.sum((f - centers[y]) ** 2) for f, y in zip(features, labels)) / (2 * 6)
    loss = training.center_loss(tf.constant(features), tf.constant(labels), tf.constant(centers))
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)

    deltas = training.center_deltas(tf.constant(features), tf.constant(labels),
                                     tf.constant(centers)).numpy()
    for j in range(4):
        members = features[labels == j]
        expected_delta = (centers[j] - members).sum(0) / (1 + len(members))
        np.testing.assert_allclose(deltas[j], expected_delta, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(deltas[3], 0.0)


def test_center_loss_model_lowers_the_center_loss_and_trains():
    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 256)
    inputs_np = (rng.normal(size=(256, 8)) + 2.0 * labels[:, None]).astype(np.float32)
    inputs = tf.keras.Input((8,))
    features = tf.keras.layers.Dense(6, activation="relu")(inputs)
    base = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(features))
    wrapper = training.CenterLossModel(base, weight=0.1, alpha=0.5)
    training.compile_for_classification(wrapper, tf.keras.optimizers.SGD(0.05))

    history = wrapper.fit(inputs_np, labels, batch_size=32, epochs=5, verbose=0).history
    assert history["center_loss"][-1] < 0.5 * history["center_loss"][0]
    assert history["loss"][-1] < history["loss"][0]
    assert np.abs(wrapper.centers.numpy()).sum() > 0  # the centres moved off zero
    # The wrapped classifier is trained in place and predicts on its own.
    np.testing.assert_allclose(base.predict(inputs_np[:4], verbose=0),
                               wrapper.predict(inputs_np[:4], verbose=0))


def test_center_loss_stage_switches_the_term_on_at_its_epoch():
    inputs = tf.keras.Input((4,))
    base = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(inputs))
    wrapper = training.CenterLossModel(base, weight=0.0)
    stage = training.CenterLossStage(start_epoch=3, weight=0.25)
    stage.set_model(wrapper)
    weights = []
    for epoch in (0, 2, 3, 4):
        stage.on_epoch_begin(epoch)
        weights.append(float(wrapper.center_loss_weight.numpy()))
    assert weights == [0.0, 0.0, 0.25, 0.25]


# --- model checks, strategies ----------------------------------------------------------------


def test_input_size_check_names_the_minimum_and_passes_at_it():
    cfg = config_lib.TrainConfig(model="cbcn_resnet18_imagenet",
                                 model_kwargs={"input_shape": [32, 32, 3]})
    training.check_model_settings(cfg)  # the minimum itself is fine
    with pytest.raises(ValueError, match="at least 32x32"):
        training.check_model_settings(config_lib.TrainConfig(
            model="cbcn_resnet18_imagenet", model_kwargs={"input_shape": [32, 31, 3]}))


def test_model_input_shape_must_match_the_dataset(tiny_run, tmp_path, run_cli, train_cli,
                                                  error_line):
    assert run_cli("evaluate", tiny_run, "--dataset", "cifar10") == 2
    err = error_line()
    assert "(16, 16, 1)" in err and "(32, 32, 3)" in err
    output = tmp_path / "run"
    assert train_cli(output, "model_kwargs.input_shape=[28, 28, 1]") == 2
    assert "does not match the digits images (16, 16, 1)" in error_line()
    assert not output.exists()
    # That the minimum is each model's real downsampling: test_models.py.


def test_make_strategy_runs_one_replica_per_local_device():
    """"mirrored" spreads over every local device (two logical CPUs here): a per-replica value
    summed across replicas, and a variable's update averaged over them; "none" is one replica
    that writes the run."""
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices configured before TF initialised")
    none = training.make_strategy("none")
    assert none.num_replicas_in_sync == 1 and training.is_chief(none)
    mirrored = training.make_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == len(devices) and training.is_chief(mirrored)
    ids = mirrored.run(lambda: tf.cast(
        tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32) + 1.0)
    assert mirrored.reduce("SUM", ids, axis=None).numpy() == sum(range(1, len(devices) + 1))
    with mirrored.scope():
        variable = tf.Variable(0.0, aggregation=tf.VariableAggregation.MEAN)

    @tf.function
    def step():
        ctx = tf.distribute.get_replica_context()
        variable.assign_add(tf.cast(ctx.replica_id_in_sync_group, tf.float32) * 2.0)

    mirrored.run(step)
    assert variable.numpy() == pytest.approx(np.mean([2.0 * i for i in range(len(devices))]))
    with pytest.raises(config_lib.ConfigError, match="none, mirrored, multi_worker"):
        training.make_strategy("tpu")


# --- runs ------------------------------------------------------------------------------------


def test_train_writes_reloadable_run_and_resume_continues(tiny_config, tmp_path):
    run = str(tmp_path / "run")
    first = training.train(tiny_config("epochs=1"), run, verbose=0)
    for name in ("config.yaml", "history.csv", "model.h5", "summary.txt", "curves.png"):
        assert os.path.getsize(os.path.join(run, name)) > 0, name
    assert first.optimizer.iterations.numpy() == 3
    summary = open(os.path.join(run, "summary.txt")).read()
    assert "Compression Ratio of Memory" in summary and "cbcn_tf summary" in summary

    images = np.random.default_rng(0).normal(size=(5, 16, 16, 1)).astype(np.float32)
    reloaded = training.load_model(run)
    np.testing.assert_array_equal(reloaded.predict(images, verbose=0),
                                  first.model.predict(images, verbose=0))

    # As if killed after logging epoch 1 but before its backup: the CSV is one epoch ahead,
    # and the resumed run must redo epoch 1 without listing it twice.
    with open(os.path.join(run, "history.csv")) as handle:
        row = handle.read().splitlines()[1]
    with open(os.path.join(run, "history.csv"), "a") as handle:
        handle.write("1" + row[1:] + "\n")
    # Another seed: had epoch 0 been rerun (nothing restored), its row would differ.
    second = training.train(tiny_config("epochs=2", "seed=1"), run, resume=True, verbose=0)
    assert [row["epoch"] for row in second.history] == [0, 1]
    assert second.history[0] == first.history[0]
    assert second.optimizer.iterations.numpy() == 6  # restored 3 + 3 new steps
    assert config_lib.read_config(os.path.join(run, "config.yaml")).epochs == 2


def test_center_loss_stage_under_mirrored_strategy(tiny_config, tmp_path, monkeypatch):
    """The center-loss stage switches the term on at ``epochs`` (weight 0 before, the
    configured weight after), also under MirroredStrategy."""
    weights = []

    class Record(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights.append(float(self.model.center_loss_weight.numpy()))

    stage = training.CenterLossStage
    original_prepare = training.loop._Fit.prepare

    def prepare(*args, **kwargs):
        fit = original_prepare(*args, **kwargs)
        extra = [c for c in fit.callbacks if isinstance(c, stage)]
        assert len(extra) == 1
        fit.callbacks.append(Record())
        return fit

    monkeypatch.setattr(training.loop._Fit, "prepare", prepare)
    result = training.train(
        tiny_config("epochs=1", "center_loss_epochs=1", "center_loss_weight=0.5",
                    "distribute=mirrored"), str(tmp_path / "run"), verbose=0)
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert weights == [0.0, 0.5]
    assert all(np.isfinite(row["center_loss"]) for row in result.history)
    assert not isinstance(result.model, training.CenterLossModel)  # model.h5 is the classifier


def _center_step(strategy, weights, centers, images, labels):
    """One SGD step (lr 1) of a CenterLossModel under ``strategy``; the new weights."""
    with strategy.scope():
        inputs = tf.keras.Input((4,))
        features = tf.keras.layers.Dense(3, activation="tanh")(inputs)
        base = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(features))
        base.set_weights(weights)
        model = training.CenterLossModel(base, weight=1.0, alpha=0.5)
        model(tf.zeros((1, 4)))
        model.centers.assign(centers)
        training.compile_for_classification(model, tf.keras.optimizers.SGD(1.0))
    model.fit(images, labels, batch_size=len(images), epochs=1, shuffle=False, verbose=0)
    return base.get_weights()


def test_center_loss_gradient_is_scaled_per_replica(two_cpu_strategy):
    """Under 2 replicas each replica's center term is divided by the replica count, so the
    summed gradients equal the single-device gradient of the global batch's term (without
    the scaling the center loss would pull twice as hard)."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(8, 4)).astype(np.float32)
    labels = np.array([0, 1] * 4)
    centers = rng.normal(size=(2, 3)).astype(np.float32) * 2
    inputs = tf.keras.Input((4,))
    features = tf.keras.layers.Dense(3, activation="tanh")(inputs)
    weights = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(features)).get_weights()
    single = _center_step(tf.distribute.get_strategy(), weights, centers, images, labels)
    mirrored = _center_step(two_cpu_strategy, weights, centers, images, labels)
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The center term matters at this scale: a step without it lands elsewhere.
    with_center = np.concatenate([w.ravel() for w in single])
    centers_far = centers + 10.0
    other = _center_step(tf.distribute.get_strategy(), weights, centers_far, images, labels)
    assert np.abs(with_center - np.concatenate([w.ravel() for w in other])).max() > 1e-3
