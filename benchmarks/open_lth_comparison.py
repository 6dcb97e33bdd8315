"""Wall time of one short lottery-ticket run: facebookresearch/open_lth (PyTorch) vs tf_lottery.

The protocol is open_lth's own command

    python open_lth.py lottery --default_hparams=mnist_lenet_300_100 --training_steps=2ep --levels=2

three trainings of 2 epochs (levels 0, 1 and 2), test evaluation at every epoch end, against
a ``tf_lottery.LotteryTicketSearch`` of the same protocol: Lenet-300-100 (Keras 3), rounds=2,
2 epochs per round, evaluation at every epoch end, no controls, and open_lth's default
hyperparameters for mnist_lenet_300_100: SGD, learning rate 0.1, no momentum, batch 128, 20%
of the weights pruned per level by global magnitude, output layer not pruned, rewinding to
θ0, kaiming-normal initialisation (tf_lottery's Lenet is built by
``tf_lottery.zoo.models.lenet_300_100`` and its θ0 redrawn so; ``--tf-init glorot`` keeps
tf_lottery's own), inputs normalised with mean 0.1307 and std 0.3081. Both
train on all 60,000 MNIST training images in 469 batches per epoch (the last one of 96
images), 938 steps per training. What cannot be matched is listed in the results file.

The two run alternately (open_lth first in even repetitions, tf_lottery first in odd ones),
each in its own process and a fresh output directory: open_lth with the PyTorch venv's
Python (``--torch-python``, default /work/venvs/torch/bin/python: ``python3 -m venv
/work/venvs/torch && /work/venvs/torch/bin/pip install torch==2.14.1 torchvision==0.29.1``
on x86_64, ``torch==2.9.1 torchvision==0.24.1`` on aarch64), tf_lottery with the
repository's .venv. Each run is timed whole (process start to exit, imports and data
loading included) and per training (the training loop with its evaluations and per-epoch
checkpoints: open_lth's ``training.train.train``, tf_lottery's ``RoundRecord.wall_time``).

open_lth's code is never copied into this repository: it is extracted at run time from the
bare mirror (``--open-lth-mirror``) into ``--cache-dir`` (default
~/.cache/tf_lottery_bench), or taken from ``--open-lth DIR``; MNIST is decompressed from
/work/shared/data (or the repository's embedded copy) into torchvision's raw layout there,
so nothing downloads. open_lth runs unmodified through a small launcher written into the
cache that points its local platform's output and dataset roots into the cache, restores
``numpy.product`` (removed in NumPy 2, called by open_lth's learning-rate schedule), puts a
stand-in for ``torch.nn.parallel.DistributedDataParallel`` (open_lth subclasses it with an
MRO that newer torch refuses at import, open_lth issue #16; it is used only in
distributed runs), sets torch's threads and times each training.

    python benchmarks/open_lth_comparison.py               # 3 alternating repetitions
    python benchmarks/open_lth_comparison.py --repeats 1
    python benchmarks/open_lth_comparison.py --quick       # 20 steps per training, 2 repeats

Prints a table and writes benchmarks/results/open_lth_comparison[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
RESULTS = HERE.parent / "results"
DEFAULT_MIRROR = Path("/work/.mirror/facebookresearch+open_lth/repo")
DEFAULT_TORCH_PYTHON = Path("/work/venvs/torch/bin/python")
DEFAULT_CACHE = Path.home() / ".cache" / "tf_lottery_bench"
MNIST_DIRS = [Path("/work/shared/data/mnist-train"), Path("/work/shared/data/mnist-t10k"),
              REPO / "examples" / "data" / "mnist"]
MNIST_MD5 = {  # of the .gz files, as published with MNIST (torchvision and tf_lottery check them)
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# open_lth's mnist_lenet_300_100 default hparams (models/mnist_lenet.py), matched on both sides.
HPARAMS = {"model": "mnist_lenet_300_100", "init": "kaiming_normal", "optimizer": "sgd",
           "learning_rate": 0.1, "momentum": 0.0, "batch_size": 128,
           "pruning": "sparse_global", "pruning_fraction": 0.2, "not_pruned": "output layer",
           "rewind": "theta0", "train_examples": 60_000, "normalize": (0.1307, 0.3081)}
CONTENDED_CORES = 0.2  # other processes' mean load that marks a run as disturbed
ITERATIONS_PER_EPOCH = math.ceil(HPARAMS["train_examples"] / HPARAMS["batch_size"])  # 469

NOT_MATCHED = [
    "Pruning count: open_lth prunes ceil(20% of all remaining weights, the unprunable output "
    "layer's 1,000 included) from the hidden layers (53,240 of 265,200 at level 1: 20.08%); "
    "tf_lottery prunes 20% of the prunable (hidden) weights (53,040). Each run's surviving "
    "fraction of the hidden weights is in the table.",
    "Evaluation: open_lth evaluates the 10,000 test images at iterations 0, 469 and 938 of "
    "every training; tf_lottery evaluates 5,000 validation images (drawn from the 60,000 "
    "training images, which it needs for its early-stop metric) and the 10,000 test images "
    "at iterations 469 and 938: 30,000 evaluated images per training on both sides.",
    "Random streams: initial weights, data order and biases are drawn by each framework's "
    "own generator (open_lth: unseeded, as its command runs; tf_lottery: seed 0), so the "
    "accuracies agree in distribution, not bit for bit.",
    "Input pipeline: open_lth feeds uint8 images through PIL, ToTensor and Normalize in a "
    "torch DataLoader with 0 workers (its default); tf_lottery gets the normalised float32 "
    "images as a shuffled, batched tf.data.Dataset. Each side's pipeline is part of its time.",
    "Extra work tf_lottery does in a search and open_lth does not: the run directory's "
    "checksums and lock, TensorBoard summaries, results.csv/json and the results plot.",
]

LAUNCHER = r'''"""Runs open_lth's unmodified CLI in this process (written by tf_lottery's
benchmarks/open_lth_comparison.py). Environment: OPEN_LTH_SRC, OPEN_LTH_ROOT,
OPEN_LTH_DATASET_ROOT, OPEN_LTH_THREADS, OPEN_LTH_SUMMARY (a JSON file written at the end)."""
import json
import os
import runpy
import sys
import time

import numpy

if not hasattr(numpy, "product"):  # removed in NumPy 2; open_lth's lr schedule calls it
    numpy.product = numpy.prod
import torch

torch.set_num_threads(int(os.environ["OPEN_LTH_THREADS"]))


class _UnusedDistributedDataParallel(torch.nn.Module):
    """open_lth's models/base.py subclasses (Model, DistributedDataParallel), an MRO that
    newer torch refuses (DDP is now (Module, Joinable), Joinable an ABC: open_lth issue #16,
    answered there by pinning torch 1.4). Used in distributed runs only, never here."""


torch.nn.parallel.DistributedDataParallel = _UnusedDistributedDataParallel
SRC = os.environ["OPEN_LTH_SRC"]
sys.path.insert(0, SRC)

import cli.runner_registry  # noqa: E402,F401  (first, as open_lth.py: its imports are circular)
import platforms.local  # noqa: E402
import platforms.registry  # noqa: E402,F401
import training.train  # noqa: E402
from foundations.step import Step  # noqa: E402

platforms.local.Platform.root = property(lambda self: os.environ["OPEN_LTH_ROOT"])
platforms.local.Platform.dataset_root = property(
    lambda self: os.environ["OPEN_LTH_DATASET_ROOT"])

TRAININGS = []
_train = training.train.train


def timed_train(training_hparams, model, train_loader, output_location, callbacks=(),
                start_step=None, end_step=None):
    per_epoch = train_loader.iterations_per_epoch
    first = (start_step or Step.zero(per_epoch)).iteration
    last = (end_step or Step.from_str(training_hparams.training_steps, per_epoch)).iteration
    began = time.perf_counter()
    _train(training_hparams, model, train_loader, output_location, list(callbacks),
           start_step, end_step)
    TRAININGS.append({"location": output_location, "seconds": time.perf_counter() - began,
                      "steps": int(last - first), "iterations_per_epoch": int(per_epoch)})


training.train.train = timed_train
sys.argv = [os.path.join(SRC, "open_lth.py"), *sys.argv[1:]]
began = time.perf_counter()
runpy.run_path(os.path.join(SRC, "open_lth.py"), run_name="__main__")
seconds = time.perf_counter() - began

from training.metric_logger import MetricLogger  # noqa: E402

for record in TRAININGS:
    location = record["location"]
    record["level"] = int(os.path.basename(os.path.dirname(location)).split("_")[-1])
    with open(os.path.join(location, "logger")) as handle:  # platform is unset by now
        accuracy = MetricLogger.create_from_string(handle.read()).get_data("test_accuracy")
    record["test_accuracy"] = [[int(it), float(acc)] for it, acc in accuracy]
    record["final_test_accuracy"] = float(accuracy[-1][1]) if accuracy else None
    mask = torch.load(os.path.join(location, "mask.pth"))
    hidden = [name for name in mask if not name.startswith("fc.")]  # fc.weight is not pruned
    kept = sum(int(mask[name].sum()) for name in hidden)
    record["hidden_weights_remaining"] = kept / sum(mask[name].numel() for name in hidden)
with open(os.environ["OPEN_LTH_SUMMARY"], "w") as handle:
    json.dump({"seconds_in_process": seconds, "trainings": TRAININGS,
               "versions": {"torch": torch.__version__,
                            "torchvision": __import__("torchvision").__version__,
                            "numpy": numpy.__version__},
               "threads": torch.get_num_threads()}, handle, indent=1)
'''


# --- preparation ---------------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def prepare_open_lth(args) -> tuple[Path, str]:
    """open_lth's source directory (extracted from the mirror into the cache once per
    commit, or --open-lth) and its commit."""
    if args.open_lth:
        src = Path(args.open_lth).resolve()
        if not (src / "open_lth.py").is_file():
            sys.exit(f"--open-lth {src}: no open_lth.py there")
        done = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                              text=True)
        return src, done.stdout.strip() if done.returncode == 0 else "unknown"
    mirror = Path(args.open_lth_mirror)
    commit = subprocess.run(["git", "--git-dir", str(mirror), "rev-parse", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()
    src = Path(args.cache_dir) / "open_lth" / commit[:12]
    if not (src / "open_lth.py").is_file():
        src.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=src.parent, prefix=".extract-"))
        archive = subprocess.run(["git", "--git-dir", str(mirror), "archive", "HEAD"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True)
        shutil.rmtree(src, ignore_errors=True)
        staging.rename(src)
    return src, commit


def prepare_mnist(args) -> Path:
    """The four MNIST files, checked against their published MD5, decompressed where
    torchvision's MNIST looks for them (DATASET_ROOT/mnist/MNIST/raw): no download."""
    dataset_root = Path(args.cache_dir) / "open_lth_datasets"
    raw = dataset_root / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    dirs = ([Path(args.mnist_dir)] if args.mnist_dir else []) + MNIST_DIRS
    for name, md5 in MNIST_MD5.items():
        target = raw / name[:-3]
        if target.is_file():
            continue
        source = next((d / name for d in dirs if (d / name).is_file()), None)
        if source is None:
            sys.exit(f"{name} not found in {', '.join(map(str, dirs))} (use --mnist-dir)")
        if _md5(source) != md5:
            sys.exit(f"{source} has MD5 {_md5(source)}, expected {md5}")
        partial = target.with_suffix(".partial")
        partial.write_bytes(gzip.decompress(source.read_bytes()))
        partial.rename(target)
    return dataset_root


# --- one run of each -----------------------------------------------------------------


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat), or None."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def _run(command, env, log: Path) -> tuple[float, float | None]:
    """Run ``command``: its wall seconds, and the cores other processes kept busy meanwhile
    (the machine's busy CPU time less this benchmark's, over the wall time; None if
    unknown): near 0 on an idle machine."""
    busy, own = _busy_cpu_seconds(), _own_cpu_seconds()
    began = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        sys.exit(f"{' '.join(map(str, command))} failed ({done.returncode}); {log}:\n{tail}")
    after = _busy_cpu_seconds()
    others = None if busy is None or after is None else \
        max(0.0, (after - busy) - (_own_cpu_seconds() - own)) / seconds
    return seconds, others


def run_open_lth(args, src: Path, dataset_root: Path, launcher: Path, log: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="open_lth_run_") as workdir:
        env = dict(os.environ, OPEN_LTH_SRC=str(src), OPEN_LTH_ROOT=str(Path(workdir) / "data"),
                   OPEN_LTH_DATASET_ROOT=str(dataset_root), OPEN_LTH_THREADS=str(args.threads),
                   OPEN_LTH_SUMMARY=str(Path(workdir) / "summary.json"),
                   OMP_NUM_THREADS=str(args.threads), PYTHONDONTWRITEBYTECODE="1")
        command = [args.torch_python, str(launcher), "lottery",
                   "--default_hparams=mnist_lenet_300_100",
                   f"--training_steps={args.training_steps}", f"--levels={args.levels}"]
        wall, others = _run(command, env, log)
        summary = json.loads((Path(workdir) / "summary.json").read_text())
    trainings = sorted(summary.pop("trainings"), key=lambda t: t["level"])
    for training in trainings:
        training.pop("location")
    return {"framework": "open_lth", "wall_s": wall, "other_cores_busy": others,
            "trainings": trainings, **summary}


def run_tf_lottery(args, log: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="tf_lottery_run_") as workdir:
        spec = {"workdir": workdir, "steps": tf_steps(args.training_steps),
                "levels": args.levels, "threads": args.threads, "seed": args.seed,
                "input": args.tf_input, "init": args.tf_init}
        command = [args.tf_python, str(HERE), "--child-tf", json.dumps(spec)]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")
        wall, others = _run(command, env, log)
        summary = json.loads((Path(workdir) / "summary.json").read_text())
    return {"framework": "tf_lottery", "wall_s": wall, "other_cores_busy": others, **summary}


def tf_steps(training_steps: str) -> int:
    """open_lth's '2ep' / '20it' as a number of steps (469 steps per epoch)."""
    match = re.fullmatch(r"(\d+)(ep|it)", training_steps)
    if not match:
        raise argparse.ArgumentTypeError(f"training steps {training_steps!r}: use Nep or Nit")
    count = int(match.group(1))
    return count * ITERATIONS_PER_EPOCH if match.group(2) == "ep" else count


def _tf_child(spec: dict) -> None:
    """The tf_lottery side, in its own process: the search, and a summary.json."""
    began = time.perf_counter()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    import tf_lottery as tfl
    from tf_lottery.zoo.data import load_dataset
    from tf_lottery.zoo.models import lenet_300_100

    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    batch, seed = HPARAMS["batch_size"], spec["seed"]
    mean, std = HPARAMS["normalize"]
    data = load_dataset("mnist", validation_size=5000)  # 5,000 held out for validation...
    x = np.concatenate([data.train[0], data.validation[0]])  # ...but all 60,000 trained on
    y = np.concatenate([data.train[1], data.validation[1]])

    def normalized(images):
        return ((images - mean) / std).astype(np.float32)

    x, validation = normalized(x), (normalized(data.validation[0]), data.validation[1])
    test = (normalized(data.test[0]), data.test[1])
    if spec["input"] == "dataset":  # 469 batches per epoch, the last of 96, as open_lth
        train = tf.data.Dataset.from_tensor_slices((x, y)) \
            .shuffle(len(x), seed=seed, reshuffle_each_iteration=True).batch(batch)
        per_epoch = math.ceil(len(x) / batch)
    else:  # arrays: tf_lottery batches them itself, full batches only (468 per epoch)
        train, per_epoch = (x, y), len(x) // batch

    def build(model_seed):
        """tf_lottery's Lenet-300-100; with init "kaiming" its weights are redrawn as open_lth's
        kaiming_normal initializer and torch's nn.Linear bias default draw them: kernels
        N(0, 2 / fan_in), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)). They are θ0."""
        model = lenet_300_100(data.input_shape, seed=model_seed, keras=3)
        if spec["init"] != "kaiming":
            return model  # tf_lottery's own: Glorot-normal kernels, zero biases
        rng = np.random.default_rng(model_seed)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                fan_in = layer.kernel.shape[0]
                layer.kernel.assign(rng.normal(0.0, math.sqrt(2.0 / fan_in),
                                               layer.kernel.shape).astype(np.float32))
                bound = 1.0 / math.sqrt(fan_in)
                layer.bias.assign(rng.uniform(-bound, bound, layer.bias.shape)
                                  .astype(np.float32))
        return model

    steps = spec["steps"]
    schedule = tfl.RewindingSchedule(rounds=spec["levels"], steps_per_round=steps,
                                     prune_rate=HPARAMS["pruning_fraction"])
    search = tfl.LotteryTicketSearch(
        build, schedule, Path(spec["workdir"]) / "run", controls=(),
        optimizer=keras.optimizers.SGD(learning_rate=HPARAMS["learning_rate"],
                                       momentum=HPARAMS["momentum"]),
        batch_size=batch, eval_every=per_epoch, verbose=0, scope="global",
        exclude=("output",), rewind_to=0, seed=seed)
    searched = time.perf_counter()
    result = search.run(train, validation, test,
                        data_identity="mnist-60000-normalized" if spec["input"] == "dataset"
                        else None)
    search_seconds = time.perf_counter() - searched
    trainings = [{"level": r.round, "seconds": r.wall_time, "steps": steps,
                  "iterations_per_epoch": per_epoch,
                  "final_test_accuracy": r.final_test_accuracy,
                  "early_stop_test_accuracy": r.test_accuracy,
                  "early_stop_iteration": r.early_stop_iteration,
                  "hidden_weights_remaining": r.weights_remaining}
                 for r in result.records if r.variant == "ticket"]
    summary = {"seconds_in_process": time.perf_counter() - began,
               "search_run_seconds": search_seconds, "trainings": trainings,
               "threads": tf.config.threading.get_intra_op_parallelism_threads(),
               "versions": {"tensorflow": tf.__version__, "keras": keras.__version__,
                            "tf_lottery": tfl.__version__, "numpy": np.__version__}}
    (Path(spec["workdir"]) / "summary.json").write_text(json.dumps(summary, indent=1))


# --- report --------------------------------------------------------------------------


def _row(run: dict, repeat: int) -> dict:
    trainings = run["trainings"]
    seconds = sum(t["seconds"] for t in trainings)
    steps = sum(t["steps"] for t in trainings)
    last = trainings[-1]
    return {"framework": run["framework"], "repeat": repeat, "wall_s": round(run["wall_s"], 3),
            "training_s": round(seconds, 3), "steps": steps,
            "ms_per_step": round(seconds / steps * 1e3, 4),
            "training_s_each": [round(t["seconds"], 3) for t in trainings],
            "final_test_accuracy": last["final_test_accuracy"],
            "hidden_weights_remaining": round(last["hidden_weights_remaining"], 6),
            "other_cores_busy": None if run["other_cores_busy"] is None
            else round(run["other_cores_busy"], 3)}


def _table(rows: list) -> str:
    lines = ["| framework | repeat | wall s (whole run) | training s (each) | steps | "
             "ms/step | final test acc | hidden weights left | other processes (cores) |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        each = ", ".join(f"{s:.1f}" for s in r["training_s_each"])
        others = "?" if r["other_cores_busy"] is None else f"{r['other_cores_busy']:.2f}"
        lines.append(f"| {r['framework']} | {r['repeat']} | {r['wall_s']:.1f} | {each} | "
                     f"{r['steps']} | {r['ms_per_step']:.3f} | "
                     f"{100 * r['final_test_accuracy']:.2f}% | "
                     f"{100 * r['hidden_weights_remaining']:.2f}% | {others} |")
    return "\n".join(lines)


def _summary(rows: list, repeats: int) -> tuple[dict, str]:
    by = {name: [r for r in rows if r["framework"] == name] for name in ("open_lth", "tf_lottery")}
    stats = {}
    for name, runs in by.items():
        stats[name] = {key: statistics.median(r[key] for r in runs)
                       for key in ("wall_s", "training_s", "ms_per_step", "final_test_accuracy")}
    paired = [(o, t) for o, t in zip(by["open_lth"], by["tf_lottery"])]
    ratios = {key: statistics.median(o[key] / t[key] for o, t in paired)
              for key in ("wall_s", "ms_per_step")}
    lines = ["| | open_lth | tf_lottery | open_lth / tf_lottery (median of paired runs) |",
             "| --- | ---: | ---: | ---: |",
             f"| median wall s (whole run) | {stats['open_lth']['wall_s']:.1f} | "
             f"{stats['tf_lottery']['wall_s']:.1f} | {ratios['wall_s']:.2f}x |",
             f"| median ms per training step | {stats['open_lth']['ms_per_step']:.3f} | "
             f"{stats['tf_lottery']['ms_per_step']:.3f} | {ratios['ms_per_step']:.2f}x |",
             f"| median final test accuracy | "
             f"{100 * stats['open_lth']['final_test_accuracy']:.2f}% | "
             f"{100 * stats['tf_lottery']['final_test_accuracy']:.2f}% | |"]
    return {"medians": stats, "median_ratio_open_lth_over_tf_lottery": ratios,
            "repeats": repeats}, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="20 steps per training (--training-steps 20it), 2 repeats")
    parser.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 2)")
    parser.add_argument("--training-steps", default=None,
                        help="per training, open_lth's syntax: 2ep (default) or 20it (quick)")
    parser.add_argument("--levels", type=int, default=2, help="pruning levels (rounds)")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads / TF intra-op threads")
    parser.add_argument("--seed", type=int, default=0, help="tf_lottery's search seed")
    parser.add_argument("--tf-input", choices=("dataset", "arrays"), default="dataset",
                        help="tf_lottery's training data: a batched tf.data.Dataset (469 "
                        "steps per epoch, as open_lth) or arrays (468 full batches)")
    parser.add_argument("--tf-init", choices=("kaiming", "glorot"), default="kaiming",
                        help="tf_lottery's θ0: open_lth's kaiming_normal draw, or the "
                        "Glorot-normal initializers of tf_lottery.zoo.models.lenet_300_100")
    parser.add_argument("--open-lth", metavar="DIR", help="an open_lth checkout to use")
    parser.add_argument("--open-lth-mirror", default=str(DEFAULT_MIRROR),
                        help="the bare git mirror to extract open_lth from")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                        help="where open_lth, MNIST for it and the run logs go")
    parser.add_argument("--mnist-dir", help="a folder holding MNIST's four .gz files")
    parser.add_argument("--torch-python", default=str(DEFAULT_TORCH_PYTHON))
    venv_python = REPO / ".venv" / "bin" / "python"
    parser.add_argument("--tf-python",
                        default=str(venv_python if venv_python.exists() else sys.executable))
    parser.add_argument("--child-tf", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_tf:
        _tf_child(json.loads(args.child_tf))
        return
    repeats = args.repeats or (2 if args.quick else 3)
    args.training_steps = args.training_steps or ("20it" if args.quick else "2ep")
    tf_steps(args.training_steps)
    if not Path(args.torch_python).exists():
        sys.exit(f"{args.torch_python} does not exist: create the PyTorch venv (see the "
                 "module docstring) or pass --torch-python")

    per_epoch = ITERATIONS_PER_EPOCH if args.tf_input == "dataset" \
        else HPARAMS["train_examples"] // HPARAMS["batch_size"]
    load = os.getloadavg()
    src, commit = prepare_open_lth(args)
    dataset_root = prepare_mnist(args)
    launcher = Path(args.cache_dir) / "open_lth" / "launch.py"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(LAUNCHER)
    logs = Path(args.cache_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"open_lth {commit[:12]} at {src}; MNIST for it in {dataset_root}; logs in {logs}; "
          f"load average {load[0]:.2f}", flush=True)
    if load[0] >= 0.5:
        print(f"warning: the machine is not idle (1-minute load average {load[0]:.2f}); the "
              "times will be noisy", flush=True)

    runs, rows = [], []
    for repeat in range(repeats):
        order = ("open_lth", "tf_lottery") if repeat % 2 == 0 else ("tf_lottery", "open_lth")
        for name in order:
            log = logs / f"{name}_{repeat}.log"
            if name == "open_lth":
                run = run_open_lth(args, src, dataset_root, launcher, log)
            else:
                run = run_tf_lottery(args, log)
            run["repeat"] = repeat
            runs.append(run)
            rows.append(_row(run, repeat))
            print(f"repeat {repeat}: {name} {run['wall_s']:.1f} s, "
                  f"{rows[-1]['ms_per_step']:.3f} ms/step, other processes kept "
                  f"{rows[-1]['other_cores_busy']} cores busy", flush=True)
    rows.sort(key=lambda r: (r["framework"], r["repeat"]))
    summary, summary_table = _summary(rows, repeats)
    table = _table(rows)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}"
    flags = " --quick" * args.quick + (f" --repeats {args.repeats}" if args.repeats else "")
    if args.training_steps != ("20it" if args.quick else "2ep"):
        flags += f" --training-steps {args.training_steps}"
    if args.levels != 2:
        flags += f" --levels {args.levels}"
    if args.tf_input != "dataset":
        flags += f" --tf-input {args.tf_input}"
    if args.tf_init != "kaiming":
        flags += f" --tf-init {args.tf_init}"
    open_lth_command = (f"python open_lth.py lottery --default_hparams=mnist_lenet_300_100 "
                        f"--training_steps={args.training_steps} --levels={args.levels}")
    report = {
        "benchmark": "open_lth_comparison", "quick": args.quick, "command":
        f"python benchmarks/open_lth_comparison.py{flags}",
        "machine": machine, "load_average_at_start": load, "threads": args.threads,
        "open_lth": {"commit": commit, "command": open_lth_command,
                     "python": args.torch_python},
        "tf_lottery": {"python": args.tf_python, "input": args.tf_input, "init": args.tf_init,
                       "seed": args.seed,
                       "search": f"LotteryTicketSearch(lenet_300_100 keras=3 {args.tf_init}, "
                       f"RewindingSchedule(rounds={args.levels}, steps_per_round="
                       f"{tf_steps(args.training_steps)}, prune_rate=0.2), controls=(), "
                       f"SGD(0.1), batch_size=128, eval_every={per_epoch}, scope='global', "
                       "exclude=('output',), rewind_to=0)"},
        "hparams_matched": HPARAMS, "not_matched": NOT_MATCHED,
        "versions": {f"{side} side": next(r["versions"] for r in runs if r["framework"] == side)
                     for side in ("open_lth", "tf_lottery")},
        "summary": summary, "rows": rows, "runs": runs,
    }
    contended = [f"{r['framework']} {r['repeat']}" for r in rows
                 if (r["other_cores_busy"] or 0) > CONTENDED_CORES]
    report["contended_runs"] = contended
    warning = (f"**Not a clean measurement**: other processes kept more than "
               f"{CONTENDED_CORES} cores busy during {', '.join(contended)}.\n\n"
               if contended else "")
    text = (f"{warning}Command: `{report['command']}`\n\nMachine: {machine} (load average at start "
            f"{load[0]:.2f}); {args.threads} threads each\n\n"
            f"open_lth {commit[:12]}: `{open_lth_command}` (torch "
            f"{report['versions']['open_lth side']['torch']}); tf_lottery "
            f"{report['versions']['tf_lottery side']['tf_lottery']} (TensorFlow "
            f"{report['versions']['tf_lottery side']['tensorflow']}, Keras "
            f"{report['versions']['tf_lottery side']['keras']}): "
            f"`{report['tf_lottery']['search']}`\n\n"
            f"{summary_table}\n\n{table}\n\n"
            "Wall s: the whole process, imports and data loading included. Training s: the "
            "training loop of each level with its evaluations and per-epoch checkpoints; "
            "ms/step is their sum over the steps. Final test acc: the last level at the end "
            "of its training. Other processes: the cores the rest of the machine kept busy "
            "during the run (/proc/stat less this benchmark's CPU time), near 0 when idle." +
            (" In --quick, the evaluations and the process start dominate: ms/step is not a "
             "training speed there." if args.quick else "") + "\n\nNot matched:\n\n" +
            "".join(f"- {item}\n" for item in NOT_MATCHED))
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    name = "open_lth_comparison" + ("_quick" if args.quick else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
