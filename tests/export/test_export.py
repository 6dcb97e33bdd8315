"""Exports: stripped SavedModels and sparse TFLite files run in LiteRT, never left broken."""

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from ai_edge_litert.interpreter import Interpreter

import tf_lottery as tfl
from tf_lottery import export

from helpers import compile_for_classification, small_mlp


@pytest.fixture(scope="module")
def tickets(mnist_slice, tmp_path_factory):
    """Block size -> a LotteryModel after two IMP rounds (16.8% of weights kept), by fit."""
    (x, y), _ = mnist_slice
    made = {}
    for block in (1, 4, 16):
        schedule = tfl.RewindingSchedule(rounds=2, steps_per_round=10, prune_rate=0.6,
                                         layer_rates={"output": 0.1})
        pruned = compile_for_classification(tfl.prune_with_rewinding(
            small_mlp(seed=block), schedule, block_size=block,
            checkpoint_dir=tmp_path_factory.mktemp(f"rewind_{block}")), learning_rate=5e-3)
        pruned.fit(x, y, batch_size=60, epochs=6, verbose=0)
        assert [r.round for r in pruned.rounds] == [0, 1, 2]
        made[block] = pruned
    return made


def _files(directory):
    """Every path below ``directory``, hidden temporary ones included."""
    return sorted(str(p.relative_to(directory)) for p in Path(directory).rglob("*"))


def _check_sizes_and_sparsity(report, path, pruned):
    assert report.path == str(path)
    assert 0 < report.gzip_bytes < report.size_bytes
    masks = pruned.masks
    assert report.weights_kept == pytest.approx(masks.fraction_kept(), abs=1e-12)
    assert report.layer_sparsity == pytest.approx(masks.sparsity(), abs=1e-12)
    saved = json.loads(export.report_path(path).read_text())
    assert saved == json.loads(report.to_json())
    assert export.ExportReport.from_json(export.report_path(path).read_text()) == report
    threads = sorted({1, os.cpu_count()})  # one thread and every core, each named
    assert [latency.threads for latency in report.latencies] == threads
    assert [item["threads"] for item in saved["latencies"]] == threads
    assert all(latency.ms > 0 and latency.dense_ms > 0 for latency in report.latencies)
    assert all(f"{count} thread" in str(report) for count in threads)
    assert saved["weights_kept"] == report.weights_kept and saved["path"] == str(path)


def test_saved_model_round_trip_gives_the_same_predictions_and_the_masks_zeros(
        tickets, mnist_slice, tmp_path):
    pruned = tickets[4]
    _, (x_test, y_test) = mnist_slice
    path = tmp_path / "ticket"
    report = tfl.export_saved_model(pruned, path, test_data=(x_test, y_test), latency_runs=5,
                                    verbose=False)

    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    (name,) = serve.structured_input_signature[1]
    (served,) = serve(**{name: tf.constant(x_test)}).values()
    # the same weights bit for bit (below); outputs equal up to float summation order, which
    # differs between Keras's batches of 32 and one served batch of 200
    np.testing.assert_allclose(served.numpy(), pruned.predict(x_test, verbose=0), rtol=0,
                               atol=1e-5)
    stored = {v.name.split(":")[0]: v.numpy() for v in loaded.variables}
    assert not any("mask" in key or "threshold" in key for key in stored)  # wrappers stripped
    for weight_path, mask in pruned.masks.items():
        np.testing.assert_array_equal(stored[weight_path] != 0, mask)  # bit for bit
    assert set(pruned.masks) == {"hidden/kernel", "output/kernel"}

    assert report.format == "SavedModel" and report.kernel_block == 4
    assert report.agreement == 1.0 and report.max_abs_diff == 0
    expected_accuracy = float(np.mean(pruned.predict(x_test, verbose=0).argmax(1) == y_test))
    assert report.keras_accuracy == report.exported_accuracy == expected_accuracy
    # a SavedModel runs dense: timed as the same model's dense float32 TFLite
    assert "as a dense float32 TFLite" in report.latency_of and report.dense_size_bytes is None
    assert report.latency_ms > 0 and report.dense_latency_ms > 0
    assert report.size_bytes == sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    _check_sizes_and_sparsity(report, path, pruned)
    outside = [f for f in _files(tmp_path) if not f.startswith("ticket/")]
    assert outside == ["ticket", "ticket.report.json"]  # no staging directory left behind


def _run_batched(path, x):
    """Run a TFLite file on all of ``x`` at once: an independent check of the export's loop."""
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    interpreter.resize_tensor_input(inp["index"], [len(x), x.shape[1]])
    interpreter.allocate_tensors()
    in_scale, in_zero = inp["quantization"]
    if inp["dtype"] == np.int8:
        x = np.clip(np.round(x / in_scale + in_zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    y = interpreter.get_tensor(out["index"])
    out_scale, out_zero = out["quantization"]
    return (y.astype(np.float32) - out_zero) * out_scale if out["dtype"] == np.int8 else y


@pytest.mark.parametrize("block, quantize, sparse, encoding, dtype", [
    (4, None, True, "sparse float32", np.float32),
    (1, None, True, "sparse float32", np.float32),
    (16, "int8", True, "sparse int8", np.int8),
    (1, "int8", False, "dense int8", np.int8),
    (1, "dynamic", False, "dense dynamic-range int8", np.float32),
], ids=["1x4-sparse-float", "unstructured-sparse-float", "1x16-sparse-int8",
        "unstructured-dense-int8", "unstructured-dense-dynamic"])
def test_each_tflite_encoding_converts_loads_runs_and_agrees(tickets, mnist_slice, tmp_path,
                                                               block, quantize, sparse,
                                                               encoding, dtype):
    pruned = tickets[block]
    (x_train, _), (x_test, y_test) = mnist_slice
    path = tmp_path / "ticket.tflite"
    report = tfl.export_tflite(pruned, path, quantize=quantize, sparse=sparse,
                               representative_data=x_train if quantize == "int8" else None,
                               test_data=(x_test, y_test), latency_runs=20, verbose=False)
    assert _files(tmp_path) == ["ticket.tflite", "ticket.tflite.report.json"]
    keras_out = pruned.predict(x_test, verbose=0)
    tflite_out = _run_batched(path, x_test)
    assert Interpreter(model_path=str(path)).get_input_details()[0]["dtype"] == dtype
    agreement = np.mean(tflite_out.argmax(1) == keras_out.argmax(1))
    if quantize is None:
        np.testing.assert_allclose(tflite_out, keras_out, atol=1e-4)
        assert report.agreement == 1.0 and report.max_abs_diff < 1e-4
    else:
        assert agreement >= 0.98 and report.agreement >= 0.98
        assert 0 < report.max_abs_diff < 0.5 * np.abs(keras_out).max()  # quantized, not exact
    assert abs(report.exported_accuracy - np.mean(tflite_out.argmax(1) == y_test)) <= 0.01
    assert report.keras_accuracy == pytest.approx(np.mean(keras_out.argmax(1) == y_test))
    assert report.keras_accuracy > 0.5  # a trained ticket: agreement is not about constants

    content = path.read_bytes()
    assert report.size_bytes == len(content)
    assert report.gzip_bytes == len(gzip.compress(content, compresslevel=9))
    assert report.kernel_block == block and report.samples == len(x_test)
    assert report.encoding == encoding and report.format == "TFLite"
    assert report.dense_size_bytes > report.size_bytes
    if sparse:  # 16.8% of the weights kept: the sparse format is several times smaller
        assert report.size_reduction > 2.5
    assert report.latency_ms > 0 and report.dense_latency_ms > 0
    assert report.speedup == pytest.approx(report.dense_latency_ms / report.latency_ms)
    _check_sizes_and_sparsity(report, path, pruned)


@pytest.mark.parametrize("block, quantize, message", [
    (1, "int8", "fails to load.*Unstructured sparse int8 cannot run under XNNPACK.*"
                "block_size=16.*sparse=False"),
    (1, "dynamic", "fails to load.*Sparse dynamic-range int8 does not run correctly"),
    (16, "dynamic", "(returns NaN or inf|picks the Keras model's class on only).*"
                    "Sparse dynamic-range int8 does not run correctly"),  # it runs, wrongly
], ids=["unstructured-int8", "unstructured-dynamic", "1x16-dynamic"])
def test_an_encoding_litert_cannot_run_is_refused_and_leaves_no_file(tickets, mnist_slice,
                                                                      tmp_path, block,
                                                                      quantize, message):
    (x_train, _), (x_test, y_test) = mnist_slice
    path = tmp_path / "out" / "ticket.tflite"
    with pytest.raises(tfl.ExportError, match=message) as caught:
        tfl.export_tflite(tickets[block], path, quantize=quantize,
                          representative_data=x_train if quantize == "int8" else None,
                          test_data=(x_test, y_test), verbose=False)
    assert f"Nothing was written to {path}" in str(caught.value)
    assert _files(tmp_path) == ["out"]  # no file, no report, no temporary copy


def test_block_encoding_that_would_drop_a_partial_block_is_refused(tmp_path):
    model = small_mlp(seed=30, input_dim=200)  # 200 inputs: 12 whole blocks of 16, then 8
    kernel, bias = model.get_layer("hidden").get_weights()
    kept = np.repeat(np.random.default_rng(0).random((13, 32)) < 0.3, 16, axis=0)[:200]
    kept[192:] = False
    kept[192:, 0] = True  # only output unit 0 keeps its partial last block
    model.get_layer("hidden").set_weights([kernel * kept, bias])
    x = np.random.default_rng(1).random((50, 200)).astype("float32")
    with pytest.raises(tfl.ExportError, match=r"would lose weights.*whole 1x16 blocks.*"
                                              r"hidden/kernel \(200 inputs, 8 weights kept in "
                                              r"the last 8\).*sparse=False"):
        tfl.export_tflite(model, tmp_path / "int8.tflite", quantize="int8",
                          representative_data=x, verbose=False)
    assert _files(tmp_path) == []
    report = tfl.export_tflite(model, tmp_path / "float.tflite", test_data=x, latency_runs=5,
                               verbose=False)  # 200 is a multiple of 4: 1x4 blocks lose nothing
    assert report.kernel_block == 16 and report.agreement == 1.0


@pytest.mark.parametrize("sparse", [True, False])
def test_int8_that_disagrees_with_keras_is_refused(tickets, mnist_slice, tmp_path, sparse):
    """The fix offers sparse=False only where it was not passed (issue 31)."""
    (x_train, _), (x_test, y_test) = mnist_slice
    with pytest.raises(tfl.ExportError, match="picks the Keras model's class on only.*"
                                              "Calibrate with representative_data") as caught:
        tfl.export_tflite(tickets[16], tmp_path / "t.tflite", quantize="int8", sparse=sparse,
                          representative_data=x_train * 255,  # raw pixels: wrong scale
                          test_data=(x_test, y_test), verbose=False)
    assert ("sparse=False" in str(caught.value)) == sparse
    assert _files(tmp_path) == []


def test_plain_and_tfmot_wrapped_models_export_and_default_to_saved_models(
        mnist_slice, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default is saved_models/ under the working directory,
    assert not export.SAVED_MODELS_DIR.is_absolute()  # never the installed package's folder
    (x, y), (x_test, _) = mnist_slice
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.75, 0, frequency=1)
    wrapped = compile_for_classification(tfmot.sparsity.keras.prune_low_magnitude(
        small_mlp(seed=20), pruning_schedule=schedule))
    wrapped.fit(x, y, batch_size=60, epochs=1, verbose=0,
                callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    wrapped_report = tfl.export_tflite(wrapped, test_data=x_test, latency_runs=5)
    assert wrapped_report.path == f"saved_models/{wrapped.name}_sparse_float32.tflite"
    assert (tmp_path / wrapped_report.path).is_file()
    assert wrapped_report.weights_kept == pytest.approx(0.25, abs=0.01)
    assert wrapped_report.keras_accuracy is None and wrapped_report.agreement == 1.0
    assert "vs the dense float32 TFLite" in capsys.readouterr().out  # printed

    plain = small_mlp(seed=21)
    plain._name = "plain_mlp"
    report = tfl.export_saved_model(plain, verbose=False)  # random inputs verify it
    assert report.path == "saved_models/plain_mlp" and report.weights_kept == 1.0
    assert report.samples == export.RANDOM_SAMPLES and report.layer_sparsity == {
        "hidden/kernel": 0.0, "output/kernel": 0.0}
    with pytest.raises(FileExistsError, match="plain_mlp already exists.*path="):
        tfl.export_saved_model(plain, verbose=False)


def test_bad_input_is_refused_before_anything_is_written(tickets, mnist_slice, tmp_path):
    (x_train, _), (x_test, y_test) = mnist_slice
    pruned = tickets[16]
    existing = tmp_path / "kept.tflite"
    existing.write_bytes(b"precious")
    (tmp_path / "other.tflite.report.json").write_text("{}")
    before = _files(tmp_path)
    cases = [
        (ValueError, "quantize must be one of", dict(quantize="float16")),
        (ValueError, "needs representative_data", dict(quantize="int8")),
        (ValueError, "calibrates quantize='int8' only",
         dict(quantize="dynamic", representative_data=x_train)),
        (ValueError, "min_agreement must be in", dict(min_agreement=0)),
        (ValueError, "latency_runs must be a whole number", dict(latency_runs=0)),
        (ValueError, r"test_data inputs have shape \(200, 28, 28\).*\(N, 784\)",
         dict(test_data=x_test.reshape(-1, 28, 28))),
        (ValueError, "200 inputs but 10 labels", dict(test_data=(x_test, y_test[:10]))),
        (ValueError, "x or a pair", dict(test_data=(x_test, y_test, y_test))),
        (FileExistsError, "kept.tflite already exists", dict(path=existing)),
        (FileExistsError, "other.tflite.report.json already exists",
         dict(path=tmp_path / "other.tflite")),
    ]
    for error, message, kwargs in cases:
        kwargs = {"path": tmp_path / "new.tflite", "verbose": False} | kwargs
        with pytest.raises(error, match=message):
            tfl.export_tflite(pruned, **kwargs)
    inputs = keras.Input((4,))
    two_outputs = keras.Model(inputs, [keras.layers.Dense(2)(inputs),
                                       keras.layers.Dense(3)(inputs)])
    with pytest.raises(ValueError, match="one input and one output.*2 outputs"):
        tfl.export_tflite(two_outputs, tmp_path / "two.tflite")
    assert _files(tmp_path) == before and existing.read_bytes() == b"precious"


def _record_litert_inputs(monkeypatch):
    """The inputs every LiteRT.predict of an export is given, as they come."""
    seen = []
    real = export.tflite.LiteRT.predict

    def predict(self, x):
        seen.append(np.array(x))
        return real(self, x)
    monkeypatch.setattr(export.tflite.LiteRT, "predict", predict)
    return seen


def test_an_integer_input_is_verified_on_tokens_its_embeddings_take(K, tmp_path,
                                                                     monkeypatch):
    """Without test data, token ids are drawn below the least input_dim of the Embeddings
    the input feeds (issue 31: they were 64 all-zero sequences)."""
    K.utils.set_random_seed(0)
    tokens = K.Input((8,), dtype="int32")
    summed = K.layers.Add()([K.layers.Embedding(50, 4, name="words")(tokens),
                             K.layers.Embedding(30, 4, name="tags")(tokens)])
    model = K.Model(tokens, K.layers.Dense(3, name="output")(K.layers.Flatten()(summed)))
    seen = _record_litert_inputs(monkeypatch)
    report = tfl.export_tflite(model, tmp_path / "tokens.tflite", latency_runs=5,
                               verbose=False)
    (x,) = seen
    assert x.shape == (export.RANDOM_SAMPLES, 8) and x.dtype == np.int32
    assert x.min() == 0 and x.max() == 29 and len(np.unique(x)) == 30
    assert len({row.tobytes() for row in x}) == len(x)  # 64 different sequences
    assert report.samples == len(x) and report.agreement == 1.0
    assert report.verified_on == "random integers in [0, 30), the input_dim of the " \
                                 "Embedding it feeds"
    assert "(random integers in [0, 30)" in str(report)
    assert json.loads(export.report_path(report.path).read_text())["verified_on"] == \
        report.verified_on


def test_an_integer_input_of_unknown_range_is_reported_as_a_weak_check(tmp_path,
                                                                        monkeypatch):
    import keras as keras3
    ids = keras3.Input((4,), dtype="int32")
    as_float = keras3.layers.Lambda(lambda t: keras3.ops.cast(t, "float32"))(ids)
    model = keras3.Model(ids, keras3.layers.Dense(2, name="output")(as_float))
    seen = _record_litert_inputs(monkeypatch)
    report = tfl.export_tflite(model, tmp_path / "ids.tflite", latency_runs=5, verbose=False)
    assert set(np.unique(seen[0])) == {0, 1}
    assert "a weak check" in report.verified_on and "pass test_data" in report.verified_on
    assert "a weak check" in str(report)


def _lstm(batch_size=None, unroll=False):
    import keras as keras3
    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((5, 3), batch_size=batch_size)
    recurrent = keras3.layers.LSTM(4, unroll=unroll, name="lstm")(inputs)
    return keras3.Model(inputs, keras3.layers.Dense(2, name="output")(recurrent))


@pytest.mark.parametrize("sparse", [True, False])
def test_an_lstm_tflite_cannot_convert_gets_the_recurrent_fix(tmp_path, sparse):
    """An LSTM looping over a batch of unknown size: the fix names batch_size=1,
    unroll=True and export_saved_model, not sparse=False (issue 31); each of them works."""
    x = np.random.default_rng(0).random((8, 5, 3)).astype("float32")
    with pytest.raises(tfl.ExportError, match=r"float32: 'tf.TensorListReserve' op requires "
                                              r"element_shape to be static.*recurrent layer "
                                              r"'lstm' only for a fixed batch size.*"
                                              r"batch_size=1.*unroll=True.*"
                                              r"export_saved_model") as caught:
        tfl.export_tflite(_lstm(), tmp_path / "lstm.tflite", test_data=x, sparse=sparse,
                          verbose=False)
    assert "sparse=False" not in str(caught.value) and _files(tmp_path) == []
    for name, fixed, data in (("batch_1", _lstm(batch_size=1), x[:1]),
                              ("unrolled", _lstm(unroll=True), x)):
        assert tfl.export_tflite(fixed, tmp_path / f"{name}.tflite", test_data=data,
                                 sparse=sparse, latency_runs=5, verbose=False).samples == \
            len(data)
    saved = tfl.export_saved_model(_lstm(), tmp_path / "lstm", test_data=x, latency_runs=5,
                                   verbose=False)
    assert saved.agreement == 1.0 and saved.latencies == ()  # no TFLite to time: it says why
    assert saved.latency_of.startswith("not measured: TFLiteConverter could not convert")
    assert f"latency: {saved.latency_of}" in str(saved)


def test_float16_layers_get_the_float32_rebuild_as_their_fix(K, tmp_path):
    """A mixed-precision model: the fix is a float32 rebuild (which exports) or a
    SavedModel, not sparse=False (issue 31)."""
    def model(policy):
        K.utils.set_random_seed(0)
        return K.Sequential([K.Input((6,)), K.layers.Dense(8, dtype=policy, name="hidden"),
                             K.layers.Dense(2, dtype="float32", name="output")])
    mixed, x = model("mixed_float16"), np.random.default_rng(0).random((8, 6))
    with pytest.raises(tfl.ExportError, match=r"FlatBuffer. 'tf.MatMul' op is neither a custom "
                                              r"op nor a flex op. TFLite's kernels do not take "
                                              r"the float16 computation \(a mixed-precision "
                                              r"policy\) of layer 'hidden'.*"
                                              r"set_global_policy\('float32'\).*"
                                              r"export_saved_model") as caught:
        tfl.export_tflite(mixed, tmp_path / "mixed.tflite", test_data=x, verbose=False)
    assert "sparse=False" not in str(caught.value) and _files(tmp_path) == []
    rebuilt = model("float32")
    rebuilt.set_weights(mixed.get_weights())
    assert tfl.export_tflite(rebuilt, tmp_path / "rebuilt.tflite", test_data=x,
                             latency_runs=5, verbose=False).samples == len(x)
    assert tfl.export_saved_model(mixed, tmp_path / "mixed", test_data=x,
                                  verbose=False).agreement == 1.0


def test_a_dense_reference_of_another_model_is_what_latency_and_size_compare_with(
        tickets, mnist_slice, tmp_path):
    """A physically smaller ticket is compared with its full-size dense network."""
    _, (x_test, _) = mnist_slice
    ticket = tickets[4]
    wider = keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, name="hidden"),
                              keras.layers.Dense(10, name="output")], name="wider")
    own = tfl.export_tflite(ticket, tmp_path / "own.tflite", test_data=x_test, latency_runs=5,
                            verbose=False)
    report = tfl.export_tflite(ticket, tmp_path / "vs_wide.tflite", test_data=x_test,
                               latency_runs=5, dense_reference=wider, verbose=False)
    assert own.dense_reference == "the same model" and report.dense_reference == repr(wider.name)
    assert report.dense_size_bytes > 3 * own.dense_size_bytes  # the wider network's file
    assert f"the dense float32 TFLite of {wider.name!r}" in str(report)
    saved = tfl.export_saved_model(ticket, tmp_path / "saved", test_data=x_test,
                                   latency_runs=5, dense_reference=wider, verbose=False)
    assert saved.dense_reference == repr(wider.name) and saved.latency_ms > 0
    with pytest.raises(ValueError, match=r"dense_reference .* takes inputs of shape \(10,\).*"
                                         r"\(784,\).*leave dense_reference out"):
        tfl.export_tflite(ticket, tmp_path / "bad.tflite", test_data=x_test,
                          dense_reference=small_mlp(seed=41, input_dim=10), verbose=False)
    assert not (tmp_path / "bad.tflite").exists()


def test_the_report_names_the_kernel_litert_runs_each_weighted_operator_with(
        tickets, mnist_slice, tmp_path):
    """1x4 block-sparse Dense kernels run in TFLite's sparse FULLY_CONNECTED; a dense
    convolutional network in XNNPACK."""
    _, (x_test, _) = mnist_slice
    report = tfl.export_tflite(tickets[4], tmp_path / "ticket.tflite", test_data=x_test,
                               latency_runs=5, verbose=False)
    sparse = [k for k in report.kernels if k.kernel == "TFLite sparse 1x4"]
    assert sparse and {k.op for k in sparse} == {"FULLY_CONNECTED"}
    assert "FULLY_CONNECTED by TFLite sparse 1x4" in report.kernel_summary
    assert f"kernels in LiteRT here: {report.kernel_summary}" in str(report)
    assert json.loads(report.to_json())["kernels"][0] == report.kernels[0]._asdict()

    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    conv_net = keras.Model(inputs, keras.layers.Dense(2, name="output")(features))
    dense = tfl.export_tflite(conv_net, tmp_path / "conv.tflite", sparse=False,
                              latency_runs=5, verbose=False)
    assert dense.kernel_summary == "1 CONV_2D by XNNPACK dense, 1 FULLY_CONNECTED by XNNPACK " \
                                   "dense"
