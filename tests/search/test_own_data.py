"""Searches beyond the paper's setting: your model, your data (tf.data), your loss and metrics,
through the API and the CLI."""

import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.runs.rundir import RunDirectory

from helpers import InterruptAt, keras_file_with_a_custom_layer

ROOT = Path(__file__).parents[2]
SCHEDULE = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.5)


def _regressor(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu",
                                                                   name="hidden"),
                             keras.layers.Dense(1, name="value")])


def _regression_data():
    rng = np.random.default_rng(0)
    x = rng.random((400, 6), dtype=np.float32)
    y = (x @ np.arange(1, 7, dtype=np.float32))[:, None]

    def pipeline(lo, hi, batch):  # deterministic: a resumed training sees the same batches
        return tf.data.Dataset.from_tensor_slices((x[lo:hi], y[lo:hi])).batch(batch)
    return pipeline(0, 240, 20), pipeline(240, 320, 40), pipeline(320, 400, 40)


def _regression_search(run_dir):
    return tfl.LotteryTicketSearch(_regressor, SCHEDULE, run_dir, loss="mse", metrics=["mae"],
                                   monitor="val_mae", eval_every=5, verbose=0,
                                   optimizer=keras.optimizers.Adam(1e-2))


def test_a_regressor_on_tf_data_with_its_own_loss_metrics_and_resume(tmp_path):
    straight = _regression_search(tmp_path / "straight").run(*_regression_data())
    with pytest.raises(KeyboardInterrupt):  # the 3rd training: round 1's first control
        _regression_search(tmp_path / "resumed").run(*_regression_data(),
                                                     callbacks=[InterruptAt(3)])
    assert RunDirectory(tmp_path / "resumed").completed_rounds(0) == 1
    resumed = _regression_search(tmp_path / "resumed").run(*_regression_data())
    for result in (straight, resumed):
        assert [(r.round, r.variant) for r in result.records] == [
            (0, "ticket"), (1, "ticket"), (1, "random_reinit"), (1, "random_pruning"),
            (2, "ticket"), (2, "random_reinit"), (2, "random_pruning")]
        for record in result.records:
            assert set(record.val_metrics) == set(record.test_metrics) == {"loss", "mae"}
            assert record.monitor == "val_mae" and record.test_accuracy is None
            assert record.val_metrics["loss"] == record.val_loss
            assert 0 < record.test_metrics["mae"] < 20 and record.early_stop_iteration in (5, 10)
        assert result.metric == "mae" and "test mae @ early stop" in result.table()
    assert [r.test_metrics for r in resumed.records] == [r.test_metrics for r in straight.records]
    header = (tmp_path / "resumed" / "results.csv").read_text().splitlines()[0].split(",")
    assert {"val_mae", "test_mae", "final_test_mae", "test_loss"} <= set(header)
    config = RunDirectory(tmp_path / "resumed").config()
    assert config["loss"] == "mse" and config["monitor"] == "val_mae"
    assert config["data"]["train"]["kind"] == "dataset"
    # a changed dataset is refused on resume, as a changed array is
    train, validation, test = _regression_data()
    with pytest.raises(tfl.RunDirectoryError, match="data.train"):
        _regression_search(tmp_path / "resumed").run(train.map(lambda x, y: (x, y + 1)),
                                                     validation, test)


def test_a_softmax_classifier_with_one_hot_labels(tmp_path):
    def softmax_net(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((8,)), keras.layers.Dense(12, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax", name="probs")])
    rng = np.random.default_rng(2)
    x = rng.random((300, 8), dtype=np.float32)
    y = np.eye(3, dtype=np.float32)[x[:, :3].argmax(axis=1)]
    search = tfl.LotteryTicketSearch(
        softmax_net, tfl.RewindingSchedule(rounds=1, steps_per_round=10), tmp_path / "run",
        loss=keras.losses.CategoricalCrossentropy(from_logits=False), metrics=["accuracy"],
        monitor="val_accuracy", mode="max", batch_size=30, eval_every=5, verbose=0,
        controls=["random_pruning"])
    result = search.run((x[:200], y[:200]), (x[200:250], y[200:250]), (x[250:], y[250:]))
    assert result.metric == "accuracy"
    for record in result.records:
        assert 0 <= record.test_accuracy <= 1 and record.monitor == "val_accuracy"
        assert record.val_metrics["accuracy"] == max(  # the best validation accuracy
            record.val_metrics["accuracy"], 0)


MODELS_PY = '''
import keras


def build(seed):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu",
                                                                   name="hidden"),
                             keras.layers.Dense(3, name="output")])
'''

DATA_PY = '''
import numpy as np


def load(seed, train_size=None):
    rng = np.random.default_rng(seed)
    x = rng.random((400, 6), dtype=np.float32)
    y = x[:, :3].argmax(axis=1)
    n = train_size or 240
    return (x[:n], y[:n]), (x[240:320], y[240:320]), (x[320:], y[320:])
'''


def _own_config(folder, **keys):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_models.py").write_text(MODELS_PY)
    (folder / "my_data.py").write_text(DATA_PY)
    config = folder / "search.yaml"
    values = {"run_dir": str(folder / "run"), "model": "my_models:build",
              "dataset": "my_data:load", "rounds": 1, "steps_per_round": 8, "batch_size": 20,
              "eval_every": 4, "verbose": 0, "controls": "[random_reinit]", **keys}
    config.write_text("".join(f"{k}: {v}\n" for k, v in values.items()))
    return config


def test_the_cli_with_a_module_function_model_and_dataset(tmp_path, monkeypatch):
    config = _own_config(tmp_path / "project", train_size=200)
    monkeypatch.chdir(tmp_path)  # neither module is on the path but for the config's folder
    assert main(["run", str(config)]) == 0
    result = tfl.SearchResult.load(tmp_path / "project" / "run")
    assert [(r.round, r.variant) for r in result.records] == [
        (0, "ticket"), (1, "ticket"), (1, "random_reinit")]
    assert RunDirectory(tmp_path / "project" / "run").config()["data"]["train"]["examples"] == 200
    for name in ("my_models", "my_data"):
        sys.modules.pop(name, None)  # export imports them again, from the recorded config
    assert main(["export", str(tmp_path / "project" / "run"), "--output",
                 str(tmp_path / "ticket.tflite")]) == 0
    assert (tmp_path / "ticket.tflite").is_file()


def test_the_cli_with_a_keras_file(tmp_path):
    config = _own_config(tmp_path, trials=2)
    sys.path.insert(0, str(tmp_path))
    try:
        import my_models
        model = my_models.build(seed=9)
    finally:
        sys.path.remove(str(tmp_path))
    model.save(tmp_path / "net.keras")
    assert main(["run", str(config), f"model={tmp_path / 'net.keras'}"]) == 0
    run = RunDirectory(tmp_path / "run")
    theta = [tfl.RewindPoint.load(run.rewind_dir(t) / "step_0", model).values
             for t in (0, 1)]
    np.testing.assert_array_equal(theta[0]["hidden/kernel"], model.get_layer("hidden").kernel)
    assert not np.array_equal(theta[1]["hidden/kernel"], theta[0]["hidden/kernel"])


def test_the_cli_with_a_keras_file_of_custom_layers_and_its_imports(tmp_path):
    net = keras_file_with_a_custom_layer(tmp_path)  # my_layers.py beside the config
    config = _own_config(tmp_path, model=net, dataset="mnist", train_size=120,
                         validation_size=40, test_size=40, imports="[my_layers]")
    assert main(["run", str(config)]) == 0
    keras.saving.get_custom_objects().pop("my_layers>Doubled")  # export imports it again
    sys.modules.pop("my_layers")
    assert main(["export", str(tmp_path / "run"), "--output",
                 str(tmp_path / "ticket.tflite")]) == 0
    assert (tmp_path / "ticket.tflite").is_file()


def test_the_regression_example_runs(tmp_path):
    assert main(["run", str(ROOT / "examples" / "mnist_regression.yaml"),
                 f"run_dir={tmp_path / 'run'}", "train_size=600", "test_size=200",
                 "validation_size=200", "rounds=1", "steps_per_round=20", "eval_every=10",
                 "verbose=0"]) == 0
    result = tfl.SearchResult.load(tmp_path / "run")
    assert result.metric == "mae" and len(result.records) == 4  # round 1: ticket, 2 controls
    assert all(np.isfinite(r.test_metrics["mae"]) for r in result.records)


def test_a_dataset_is_identified_by_its_contents_whatever_their_order():
    from tf_lottery.search.inputs import TrainingInput
    x = np.arange(120, dtype=np.float32).reshape(60, 2)
    y = np.arange(60)
    plain = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(60).batch(7)
    changed = tf.data.Dataset.from_tensor_slices((x + 1, y)).batch(10)
    ids = [TrainingInput(d, 10).identity() for d in (plain, shuffled, changed)]
    assert ids[0]["content"] == ids[1]["content"] != ids[2]["content"]
    passes = []

    def noisy():  # a pipeline whose contents change at every pass, like random augmentation
        passes.append(1)
        for start in range(0, 60, 10):
            yield x[start:start + 10] + len(passes), y[start:start + 10]
    augmented = tf.data.Dataset.from_generator(noisy, output_signature=(
        tf.TensorSpec((None, 2), tf.float32), tf.TensorSpec((None,), tf.int64)))
    assert TrainingInput(augmented, 10).identity() != TrainingInput(augmented, 10).identity()
    named = [TrainingInput(augmented, 10, named="mnist-augmented-v1").identity()
             for _ in range(2)]
    assert named[0] == named[1] and named[0]["named"] == "mnist-augmented-v1"


def test_flat_images_for_an_image_model_are_refused_with_the_line_keras_gave(K, tmp_path):
    """Keras's own line with the shapes that do not fit stays in the refusal (issue 31)."""
    def image_model(seed):
        K.utils.set_random_seed(seed)
        return K.Sequential([K.Input((28, 28, 1)), K.layers.Conv2D(2, 3, name="conv"),
                             K.layers.Flatten(), K.layers.Dense(10, name="output")])
    flat = (np.zeros((120, 784), np.float32), np.zeros(120, np.int64))
    search = tfl.LotteryTicketSearch(image_model, tfl.RewindingSchedule(rounds=1,
                                                                        steps_per_round=4),
                                     tmp_path / "run", batch_size=60, eval_every=2, verbose=0)
    with pytest.raises(tfl.DataError, match=r"cannot be evaluated on the validation data: "
                                            r"\S.*incompatible.*\(None, 784\)\. Check "
                                            r"that the data") as caught:
        search.run(flat, flat, flat)
    assert not any(mark in str(caught.value) for mark in "•\n\x1b")  # one plain line
    assert not (tmp_path / "run").exists()
