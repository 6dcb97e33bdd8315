"""A catalog of bad inputs across the API and the CLI: each gets its message, none writes
or destroys anything."""

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras

import tf_lottery as tfl
from tf_lottery.cli.commands import main
from tf_lottery.cli.config import RunConfig

from helpers import keras_file_with_a_custom_layer, small_mlp

SCHEDULE = tfl.RewindingSchedule(rounds=1, steps_per_round=4)
TINY = ("run_dir: {run}\nrounds: 1\nsteps_per_round: 4\ntrain_size: 120\ntest_size: 50\n"
        "validation_size: 50\neval_every: 2\nverbose: 0\n")
DATA = (np.zeros((120, 784), np.float32), np.zeros(120, np.int64))
CLI = "tf-lottery exits with 2"  # the expected "error" of CLI entries


def _search(run, **kwargs):
    return tfl.LotteryTicketSearch(small_mlp, SCHEDULE, run, **kwargs)


def _config(ws, extra=""):
    """A config file beside (not inside) the workspace, its run_dir inside it."""
    path = ws.parent / "config.yaml"
    path.write_text(TINY.format(run=ws / "run") + extra)
    return path


def _cli(ws, *overrides):
    return main(["run", str(_config(ws)), *overrides])


USER_MODULE = """
import numpy as np
import tensorflow as tf


def not_a_model(seed):
    return "model.h5"


def two_sets():
    x, y = np.zeros((120, 784), np.float32), np.zeros(120, np.int64)
    return (x, y), (x, y)


def dict_batches():
    x, y = np.zeros((120, 784), np.float32), np.zeros(120, np.int64)
    dataset = tf.data.Dataset.from_tensor_slices({"image": x, "label": y}).batch(60)
    return dataset, dataset, dataset


def ten_classes(seed):
    import keras
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10)])


def labels_out_of_range():
    x, y = np.zeros((120, 28, 28, 1), np.float32), np.full(120, 12, np.int64)
    return (x, y), (x, y), (x, y)


def nan_labels():
    x, y = np.zeros((120, 28, 28, 1), np.float32), np.full((120, 10), np.nan, np.float32)
    return (x, y), (x, y), (x, y)


def missing_file(seed):
    return np.load("no_such_digits.npz")


def broken_model(seed):
    raise ValueError(f"no architecture for seed {seed}")
"""


def _user_cli(ws, *overrides):
    """The CLI with a module of the user's beside the config (outside the workspace); the
    config's sizes unset (the functions take none)."""
    (ws.parent / "user_things.py").write_text(USER_MODULE)
    return _cli(ws, "train_size=null", "validation_size=null", "test_size=null", *overrides)


def _stopped_run(ws):
    """A run stopped in round 1 (beside the workspace), as it is left on disk."""
    run = ws.parent / "stopped"
    assert _cli(ws, f"run_dir={run}", "controls=[]") == 0
    shutil.rmtree(run / "trial_0" / "round_01")
    return run


def _api_run(ws):
    """A run of the Python API (no run_config.yaml), beside the workspace."""
    _search(ws.parent / "api_run", controls=()).run(DATA, DATA, DATA)
    return ws.parent / "api_run"


def _pruned(ws, schedule=SCHEDULE, keras=keras):
    """A LotteryModel whose θ0 is gone again (the refusal after it must write nothing)."""
    pruned = tfl.prune_with_rewinding(small_mlp(keras=keras), schedule, checkpoint_dir=ws / "c")
    shutil.rmtree(ws / "c")
    return pruned


def _tfmot_wrapped():
    return tfmot.sparsity.keras.prune_low_magnitude(
        small_mlp(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))


def _keras3_fit_with_a_tf_keras_callback(ws):
    import keras as keras3
    model = keras3.Sequential([keras3.Input((4,)), keras3.layers.Dense(2)])
    pruned = tfl.prune_with_rewinding(model, SCHEDULE, checkpoint_dir=ws / "c")
    shutil.rmtree(ws / "c")  # (wrapping wrote θ0; the refusal below must write nothing more)
    pruned.compile("adam", "mse")
    pruned.fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=0,
               callbacks=[keras.callbacks.TerminateOnNaN()])


def _image_model(seed):
    import keras as keras3
    return keras3.Sequential([keras3.Input((28, 28, 1)), keras3.layers.Flatten(),
                              keras3.layers.Dense(10, name="output")])


def _keras3_lstm():
    import keras as keras3
    inputs = keras3.Input((5, 3))
    return keras3.Model(inputs, keras3.layers.Dense(2)(keras3.layers.LSTM(4)(inputs)))


CATALOG = {
    # --- the API: values, types, models, layers ---------------------------------------
    "rounds 0": (lambda ws: tfl.RewindingSchedule(rounds=0, steps_per_round=5),
                 ValueError, "rounds must be a whole number >= 1"),
    "steps per round 0": (lambda ws: tfl.RewindingSchedule(rounds=1, steps_per_round=0),
                          ValueError, "steps_per_round must be a whole number >= 1"),
    "prune rate 1.0": (lambda ws: tfl.RewindingSchedule(rounds=1, steps_per_round=5,
                                                        prune_rate=1.0),
                       ValueError, "prune_rate must be a fraction strictly between 0 and 1"),
    "prune rate as text": (lambda ws: tfl.RewindingSchedule(rounds=1, steps_per_round=5,
                                                            prune_rate="0.2"),
                           ValueError, "prune_rate must be a fraction"),
    "layer rate 0": (lambda ws: tfl.RewindingSchedule(rounds=1, steps_per_round=5,
                                                      layer_rates={"output": 0}),
                     ValueError, r"layer_rates\['output'\] must be a fraction"),
    "unbuilt keras 3 model": (lambda ws: tfl.prune_with_rewinding(
        __import__("keras").Sequential([__import__("keras").layers.Dense(2)]), SCHEDULE,
        checkpoint_dir=ws / "c"), ValueError, "not built.*call it on a batch of data"),
    "tf_keras callback on a keras 3 model": (_keras3_fit_with_a_tf_keras_callback, TypeError,
                                             "callback TerminateOnNaN belongs to another Keras"),
    "model already wrapped by tf-mot": (lambda ws: tfl.prune_with_rewinding(
        _tfmot_wrapped(), SCHEDULE, checkpoint_dir=ws / "c"),
        TypeError, "already wrapped by TF-MOT.*strip_pruning"),
    "strip a non-model": (lambda ws: tfl.strip_pruning("model.keras"), TypeError,
                          "expected a Keras model"),
    "numpy scalar rounds, bad rate": (lambda ws: tfl.RewindingSchedule(
        rounds=np.int64(2), steps_per_round=5, prune_rate=np.float32(1.5)),
        ValueError, r"prune_rate must be a fraction.*got np.float32\(1.5\)"),
    "layer rates as a list": (lambda ws: tfl.RewindingSchedule(
        rounds=1, steps_per_round=5, layer_rates=[1, 2]), TypeError,
        "layer_rates must map layer names to prune rates"),
    "run_dir that is a number": (lambda ws: _search(5), TypeError, "run_dir must be a path"),
    "saved model with quantize": (lambda ws: tfl.export_model(
        small_mlp(), "saved_model", ws / "sm", quantize="int8"), ValueError,
        "quantize applies to TFLite exports only"),
    "not a model": (lambda ws: tfl.prune_with_rewinding("model.h5", SCHEDULE),
                    TypeError, "expected a Keras model"),
    "tf-mot schedule": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), tfmot.sparsity.keras.ConstantSparsity(0.5, 0), checkpoint_dir=ws / "c"),
        TypeError, "must be a tf_lottery.RewindingSchedule"),
    "no prunable layer": (lambda ws: tfl.prune_with_rewinding(
        keras.Sequential([keras.Input((3, 3)), keras.layers.Flatten()]), SCHEDULE,
        checkpoint_dir=ws / "c"), ValueError, "no prunable layer"),
    "excluded layer missing": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), SCHEDULE, exclude=["hiden"], checkpoint_dir=ws / "c"),
        ValueError, "exclude names layer 'hiden'.*Did you mean 'hidden'"),
    "rewind beyond round 0": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), SCHEDULE, rewind_to=10, checkpoint_dir=ws / "c"),
        ValueError, "beyond the first round"),
    "unknown scope": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), SCHEDULE, scope="network", checkpoint_dir=ws / "c"),
        ValueError, "scope must be one of"),
    "block size as text": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), SCHEDULE, block_size="4", checkpoint_dir=ws / "c"),
        ValueError, "block_size must be a whole number >= 1, got '4'"),
    "unknown control": (lambda ws: _search(ws / "run", controls=("shuffled",)),
                        ValueError, "unknown control 'shuffled'"),
    "fewer examples than a batch": (lambda ws: _search(ws / "run", batch_size=500).run(
        DATA, DATA, DATA), ValueError, "fewer than one batch of 500"),
    "masks file that is not one": (lambda ws: tfl.Masks.load(ws / "missing.npz"),
                                   FileNotFoundError, "missing.npz"),
    "rewind point that is not there": (lambda ws: tfl.RewindPoint.load(ws / "nothing",
                                                                       small_mlp()),
                                       tfl.RewindCheckpointError, "no rewind checkpoint"),
    "report of a non-run": (lambda ws: tfl.SearchResult.load(ws),
                            FileNotFoundError, "not a tf_lottery run directory"),
    # --- the CLI: configs and data ----------------------------------------------------
    "config key typo": (lambda ws: RunConfig.load(_config(ws, "prune_rat: 0.3\n")),
                        ValueError, "unknown config key 'prune_rat'.*'prune_rate'"),
    "override typo": (lambda ws: RunConfig.load(_config(ws), ["seeds=3"]),
                      ValueError, "unknown config key 'seeds'.*'seed'"),
    "config file missing": (lambda ws: RunConfig.load(ws / "none.yaml"),
                            ValueError, "none.yaml does not exist"),
    "unknown model": (lambda ws: _cli(ws, "model=lenet5"), CLI,
                        "unknown model 'lenet5'"),
    "unknown dataset": (lambda ws: _cli(ws, "dataset=svhn"), CLI,
                        "unknown dataset 'svhn'"),
    "unknown strategy": (lambda ws: _cli(ws, "strategy=tpu"), CLI,
                        "strategy must be one of"),
    "unknown optimizer": (lambda ws: _cli(ws, "optimizer=adamz"), CLI,
                        "optimizer 'adamz' is not a tf_keras optimizer"),
    "data dir without files": (lambda ws: _cli(ws, "dataset=fashion_mnist",
                                               f"data_dir={ws / 'empty'}"),
                               CLI, "empty/train-images-idx3-ubyte.gz does not exist"),
    "validation larger than train": (lambda ws: _cli(ws, "validation_size=70000"),
                                     CLI, r"validation_size must be a whole number in \[0"),
    "negative trials": (lambda ws: _cli(ws, "trials=-1"), CLI,
                        "trials must be a whole number"),
    # --- refused configs write nothing (a corrected rerun is not "another config") -----
    "layer rate for a missing layer": (lambda ws: _cli(ws, "layer_rates={nolayer: 0.1}"),
                                       CLI, "layer_rates names layer 'nolayer'"),
    "exclude a missing layer": (lambda ws: _cli(ws, "exclude=outptu"), CLI,
                                "exclude names layer 'outptu'.*Did you mean 'output'"),
    "rewind beyond round 0 (cli)": (lambda ws: _cli(ws, "rewind_to=10"), CLI,
                                    "beyond the first round"),
    "learning rate as text": (lambda ws: _cli(ws, "learning_rate=fast"), CLI,
                              "learning_rate must be a number > 0, got 'fast'"),
    "test size 0": (lambda ws: _cli(ws, "test_size=0"), CLI,
                    "test_size must be a whole number >= 1"),
    "validation size 0": (lambda ws: _cli(ws, "validation_size=0"), CLI,
                          "validation_size must be a whole number >= 1"),
    "negative train size": (lambda ws: _cli(ws, "train_size=-5"), CLI,
                            "train_size must be a whole number >= 1"),
    "layer rates as a list (cli)": (lambda ws: _cli(ws, "layer_rates=[1, 2]"), CLI,
                                    "layer_rates must map layer names"),
    "layer rates null": (lambda ws: _cli(ws, "layer_rates=null"), CLI,
                         "layer_rates must map layer names"),
    "run_dir that is a file": (lambda ws: _cli(ws, f"run_dir={ws / 'keep.txt'}"), CLI,
                               "keep.txt is a file, not a directory"),
    "run_dir that is a number (cli)": (lambda ws: _cli(ws, "run_dir=5"), CLI,
                                 "run_dir must be a path, got 5"),
    "export saved model with quantize": (lambda ws: main(
        ["export", str(ws / "norun"), "--format", "saved_model", "--quantize", "int8"]), CLI,
        "quantize, sparse apply to TFLite exports only"),
    # --- your own model and data ------------------------------------------------------
    "model module that does not import": (lambda ws: _cli(ws, "model=no_such_module:build"),
                                          CLI, "module 'no_such_module' does not import"),
    "model function missing": (lambda ws: _user_cli(ws, "model=user_things:bild"), CLI,
                               "user_things has no function 'bild'"),
    "model function returning a string": (lambda ws: _user_cli(
        ws, "model=user_things:not_a_model"), CLI, "returned str, not a Keras model"),
    "dataset function returning two sets": (lambda ws: _user_cli(
        ws, "dataset=user_things:two_sets"), CLI, "must return \\(train, validation, test\\)"),
    "dataset yielding dicts": (lambda ws: _user_cli(
        ws, "dataset=user_things:dict_batches", "model=user_things:not_a_model"), CLI,
        "yields .*a search needs a dataset of \\(x, y\\) batches"),
    "loss that is nan from the start": (lambda ws: _user_cli(
        ws, "dataset=user_things:nan_labels", "loss=mse", "metrics=[mae]"), CLI,
        "the loss is nan on the first validation batch.*labels"),
    "labels the loss cannot take": (lambda ws: _user_cli(
        ws, "dataset=user_things:labels_out_of_range", "model=user_things:ten_classes"), CLI,
        "cannot be evaluated on the validation data: Received a label value of 12 which is "
        "outside the valid range|the loss is nan on the first validation batch.*labels"),
    "monitor no metric produces": (lambda ws: _cli(ws, "monitor=val_auc"), CLI,
                                   "monitor 'val_auc' is not a metric the search evaluates"),
    "monitor of the test set": (lambda ws: _cli(ws, "monitor=test_loss"), CLI,
                                "monitor must name a validation metric"),
    "mode that is neither": (lambda ws: _cli(ws, "mode=maximum"), CLI,
                             "mode must be one of 'min', 'max'"),
    "metrics as a bare string": (lambda ws: _search(ws / "run", metrics="mae"), TypeError,
                                 "metrics must be a list"),
    "export of a directory that is not a run": (lambda ws: main(
        ["export", str(ws / "empty")]), CLI, "empty is not a tf_lottery run directory"),
    # --- issue 31: an optimizer mapping that is not one ---------------------------------
    "optimizer mapping without class_name": (lambda ws: _cli(ws, "optimizer={name: adam}"),
                                             CLI, r"the optimizer, given as a mapping, takes "
                                             r"class_name \(its name\) and config"),
    "optimizer mapping with a list for config": (lambda ws: _cli(
        ws, "optimizer={class_name: adam, config: [1]}"), CLI,
        r"given as a mapping, takes class_name.*got \{'class_name': 'adam', 'config': \[1\]\}"),
    "optimizer as a list": (lambda ws: _cli(ws, "optimizer=[adam]"), CLI,
                            r"the optimizer must be a name, a mapping .*got list \['adam'\]"),
    # --- issue 31: a .keras file with an unregistered custom layer ---------------------
    "keras file with a class no module registers": (lambda ws: _cli(
        ws, f"model={keras_file_with_a_custom_layer(ws.parent)}"), CLI,
        r"net.keras uses 'Doubled', which no imported module registers: add `imports: "
        r"\[my_layers\]`"),
    "imports of a module that is not there": (lambda ws: _cli(ws, "imports=[my_layrs]"), CLI,
                                              "imports: 'my_layrs': module 'my_layrs' does not "
                                              "import"),
    # --- issue 31: 5. epochs that are not exact -----------------------------------------
    "epochs that cut a round short": (lambda ws: _pruned(
        ws, tfl.RewindingSchedule(rounds=3, steps_per_round=13)).epochs(10), ValueError,
        "52 steps left, not a whole number of epochs of 10 steps: 5 epochs would stop 2 "
        "steps before the final round ends.*pruned.fit\\(train.repeat\\(\\), epochs=13, "
        "steps_per_epoch=4\\)"),
    # --- issue 31: 6. a mode against the metric ------------------------------------------
    "mode max of an error": (lambda ws: _search(ws / "run", loss="mse", metrics=["mae"],
                                                monitor="val_mae", mode="max"), ValueError,
                             "mode='max' contradicts monitor='val_mae'.*force_mode=True"),
    "mode max of an error (cli)": (lambda ws: _cli(ws, "loss=mse", "metrics=[mae]",
                                                   "monitor=val_mae", "mode=max"), CLI,
                                   "mode='max' contradicts monitor='val_mae'"),
    "mode min of an accuracy": (lambda ws: _search(ws / "run", monitor="val_accuracy",
                                                   mode="min"), ValueError,
                                "mode='min' contradicts monitor='val_accuracy'"),
    "no mode for a metric keras does not know": (lambda ws: _search(
        ws / "run", metrics=[], monitor="val_dice"), ValueError,
        "cannot tell whether val_dice is better low or high.*mode=\"min\" or mode=\"max\""),
    # --- issue 31: 13. TF-MOT's habits ----------------------------------------------------
    "tf-mot pruning_params": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), checkpoint_dir=ws / "c", pruning_schedule=tfmot.sparsity.keras
        .PolynomialDecay(0.0, 0.9, begin_step=0, end_step=1000)), TypeError,
        "not TF-MOT's pruning_schedule=.*PolynomialDecay reaches sparsity 0.9.*"
        "RewindingSchedule\\(rounds=10, steps_per_round=1000, prune_rate=0.206\\)"),
    "tf-mot constant sparsity": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), tfmot.sparsity.keras.ConstantSparsity(0.5, 0), checkpoint_dir=ws / "c"),
        TypeError, "ConstantSparsity reaches sparsity 0.5.*rounds=3, steps_per_round=<the "
        "steps of one full training>, prune_rate=0.206"),
    "tf-mot schedule to a search": (lambda ws: tfl.LotteryTicketSearch(
        small_mlp, tfmot.sparsity.keras.PolynomialDecay(0.2, 0.8, 0, 500), ws / "run"),
        TypeError, "rounds=7, steps_per_round=500, prune_rate=0.205"),
    "tf-mot block size": (lambda ws: tfl.prune_with_rewinding(
        small_mlp(), SCHEDULE, block_size=(1, 4), checkpoint_dir=ws / "c"), ValueError,
        "got \\(1, 4\\): TF-MOT's \\(rows, columns\\).*Pass block_size=4"),
    "tf-mot block size (cli)": (lambda ws: _cli(ws, "block_size=[1, 16]"), CLI,
                                "got \\(1, 16\\).*Pass block_size=16"),
    # --- issue 31: 14. loading -------------------------------------------------------------
    "keras 3 lottery model as .h5": (lambda ws: _pruned(ws, keras=__import__("keras")).save(
        ws / "pruned.h5"), ValueError, "saves as .keras, not pruned.h5.*tfl.strip_pruning"),
    "load a file that is not a model": (lambda ws: tfl.load_model(ws / "keep.txt"), ValueError,
                                        "keep.txt is not a saved Keras model \\(a .keras or "
                                        ".h5 file"),
    # --- issue 31: 4. random verification inputs need a fixed input size ---
    "export of variable-length tokens without test data": (lambda ws: tfl.export_tflite(
        keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(9, 2),
                          keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2)]),
        ws / "tokens.tflite"), ValueError, r"shape \(N, None\).*no fixed size.*pass test_data"),
    # --- issue 31: 8. an export TFLite cannot take, with its own fix ---
    "tflite export of an lstm of unknown batch size": (lambda ws: tfl.export_tflite(
        _keras3_lstm(), ws / "lstm.tflite", sparse=False), tfl.ExportError,
        "fixed batch size.*unroll=True.*export_saved_model"),
    # --- issue 31: 9. flat images for an image model ---
    "flat images for an image model": (lambda ws: tfl.LotteryTicketSearch(
        _image_model, SCHEDULE, ws / "run", batch_size=60, eval_every=2, verbose=0).run(
        DATA, DATA, DATA), tfl.DataError, r"validation data: .*incompatible.*\(None, 784\)"),
    # --- issue 31: int8 export from the CLI (item 1) ---
    "int8 export of a run without its config": (lambda ws: main(
        ["export", str(_api_run(ws)), "--quantize", "int8", "--dense", "--output",
         str(ws / "t.tflite")]), CLI,
        "--quantize int8 calibrates on the run's training data, and .*run_config.yaml"),
    # --- issue 31: a dataset function's own defaults (item 2) ---
    "size the dataset function does not take": (lambda ws: _user_cli(
        ws, "dataset=user_things:two_sets", "train_size=100"), CLI,
        "the config sets train_size: 100, but the dataset function 'user_things:two_sets' "
        "has no parameter train_size"),
    # --- issue 31: errors of your own functions (item 3) ---
    "dataset function that raises": (lambda ws: _user_cli(
        ws, "dataset=user_things:missing_file"), CLI,
        "your dataset function 'user_things:missing_file' raised FileNotFoundError: .*"
        "no_such_digits.npz.*Traceback of your code.*user_things.py\", line \\d+, in "
        "missing_file"),
    "model function that raises": (lambda ws: _user_cli(
        ws, "model=user_things:broken_model"), CLI,
        "your model function 'user_things:broken_model' raised ValueError: no architecture "
        "for seed 0.*Traceback of your code.*in broken_model"),
    # --- issue 31: export of a run in progress (item 7) ---
    "export of a run in progress without --round": (lambda ws: main(
        ["export", str(_stopped_run(ws)), "--output", str(ws / "t.tflite")]), CLI,
        "trial 0 of .*stopped is in progress: round 0 of 2 committed.*--round 0"),
}


def _tree(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_the_catalog_has_at_least_twenty_entries():
    assert len(CATALOG) >= 20


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_bad_input(name, tmp_path, capsys):
    trigger, error, message = CATALOG[name]
    workspace = tmp_path / "ws"
    workspace.mkdir()
    (workspace / "empty").mkdir()
    (workspace / "keep.txt").write_text("earlier results")
    before = _tree(workspace)
    if error == CLI:
        assert trigger(workspace) == 2
        assert re.search(message, capsys.readouterr().err, re.S)
    else:
        with pytest.raises(error, match=message):
            trigger(workspace)
    assert _tree(workspace) == before  # nothing written, nothing destroyed
    assert not (workspace / "run").exists() and not (workspace / "c").exists()
