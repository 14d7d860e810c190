"""e2e_ddp.py -- the PyTorch DistributedDataParallel baseline of `spirt bench e2e`.

Trains the same model on the same data with the same round semantics as
`spirt train`, but with N processes of torch DDP (gloo on 127.0.0.1) instead
of N serverless peers, so that time per epoch and time to a target accuracy
can be compared side by side. bench/README.md describes the semantics in full;
in short, one round (= one DDP step):

    every process p takes the next B minibatches of S examples of its own
    shard (reshuffled every epoch), computes the gradient of the mean loss
    over those B*S examples (= the mean of the B minibatch gradients), DDP
    averages the gradients over the N processes, one optimizer step.

Usage (Debian's interpreter: the pyenv `python3` first in PATH has no torch):

    /usr/bin/python3 bench/e2e_ddp.py --processes 4 --model mlp --batch-size 32 \
        --batches-per-round 2 --optimizer momentum --lr 0.05 --epochs 3

Prints exactly one JSON object on stdout; everything else goes to stderr.
Bad options and missing modules give one line on stderr and exit status 2
(options) or 1 (anything else).
"""
import os
import time

# Startup is counted from here: importing torch is part of what a run costs.
STARTED_AT = time.monotonic()

# One thread per process, set before numpy and torch start their pools: the
# comparison is N single-threaded peers against N single-threaded processes.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_variable] = "1"

import argparse
import contextlib
import datetime
import gzip
import json
import math
import shutil
import socket
import statistics
import struct
import sys
import tempfile

TEARDOWN_SECONDS = 30
PROGRAM = "e2e_ddp.py"
DEPS_HINT = "install the benchmark dependencies with scripts/deps.sh --bench and run /usr/bin/python3"

try:
    import numpy as np
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as torch_mp
    import torch.nn as nn
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel
except ImportError as missing:  # pragma: no cover - depends on the machine
    print(f"{PROGRAM}: cannot import {missing.name} ({DEPS_HINT})", file=sys.stderr)
    sys.exit(1)

DATA_DIR = "/usr/share/datasets/fashion-mnist"
IMAGE_ROWS = IMAGE_COLS = 28
FEATURES = IMAGE_ROWS * IMAGE_COLS
CLASSES = 10

# ---------------------------------------------------------------------------
# CNN ARCHITECTURE -- matches spirt's cnn (include/spirt/nn.h: 215,370 parameters)
# Layers, in order:
#   conv KxK 1 -> CONV1 (padding K//2), ReLU, max-pool 2x2,
#   conv KxK CONV1 -> CONV2 (padding K//2), ReLU, max-pool 2x2,
#   flatten (CONV2 x 7 x 7), linear -> HIDDEN, ReLU, linear HIDDEN -> 10.
CNN_KERNEL = 5
CNN_CONV1_CHANNELS = 16
CNN_CONV2_CHANNELS = 32
CNN_HIDDEN = 128
# ---------------------------------------------------------------------------

# Independent random streams, all derived from --seed.
STREAM_VALIDATION = 1  # which training examples are held out
STREAM_SHARDS = 2      # which examples go to which process
STREAM_EPOCH = 3       # each process's order within an epoch (with rank, epoch)

# How long a process waits for the others (rendezvous, allreduce) before failing.
COLLECTIVE_TIMEOUT_S = 300
EVAL_CHUNK = 1000  # test images per forward pass when evaluating


class UsageError(Exception):
    """A bad option or combination of options."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (not usage + message)."""

    def error(self, message):
        raise UsageError(message)


# --- data ------------------------------------------------------------------

def read_idx(path):
    """The unsigned-byte IDX file at `path` (gzip or raw) as a numpy array."""
    with open(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = struct.unpack(f">{dims}I", raw[4:header])
    if len(raw) - header != math.prod(shape):
        raise ValueError(f"{path}: {len(raw) - header} bytes of data for shape {shape}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_split(directory, prefix):
    """Raw images (count, 784) as uint8 and labels (count,) as int64."""
    images = read_idx(os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{directory}: {prefix} images {images.shape} do not match labels {labels.shape}")
    if labels.size and labels.max() >= CLASSES:
        raise ValueError(f"{directory}: {prefix} label {labels.max()} >= {CLASSES}")
    return images.reshape(images.shape[0], -1), labels.astype(np.int64)


def pixel_statistics(images):
    """Scalar mean and population std of the float32 byte / 255 over all
    pixels of the uint8 `images`, in double. Computed from the histogram of the 256 byte
    values: exact sums, and no 47M-double temporary (seconds on a busy box)."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    # Each pixel is the float32 byte / 255 (as spirt stores it), summed in double.
    values = (np.arange(256, dtype=np.float32) / np.float32(255.0)).astype(np.float64)
    total = counts.sum()
    mean = float((counts * values).sum() / total)
    variance = float((counts * (values - mean) ** 2).sum() / total)
    return mean, math.sqrt(variance)


def normalized(images, mean, std):
    """(byte / 255 - mean) / std as float32, as spirt's data_load then
    data_normalize compute it (float32 throughout)."""
    pixels = images.astype(np.float32) / np.float32(255.0)
    pixels -= np.float32(mean)
    pixels /= np.float32(std)
    return pixels


def load_fashion_mnist(directory):
    """(train_x, train_y, test_x, test_y, mean, std): both splits normalised
    with the mean and std of the WHOLE training set (before any hold-out), as
    spirt's data_statistics / data_normalize do."""
    train_images, train_y = load_split(directory, "train")
    test_images, test_y = load_split(directory, "t10k")
    mean, std = pixel_statistics(train_images)
    return normalized(train_images, mean, std), train_y, normalized(test_images, mean, std), test_y, mean, std


def seeded_generator(seed, *stream):
    return np.random.default_rng([seed, *stream])


def split_validation(count, validation, seed):
    """(train_indices, validation_indices): `validation` examples out of
    range(count) chosen by a seeded shuffle; each list in ascending order."""
    order = seeded_generator(seed, STREAM_VALIDATION).permutation(count)
    return np.sort(order[validation:]), np.sort(order[:validation])


def make_shards(indices, processes, seed):
    """IID shards of equal size: a seeded shuffle of `indices` cut into
    `processes` CONTIGUOUS slices of len(indices) // processes each. The
    remainder (fewer than `processes` examples) is left out, so that every
    process runs the same number of rounds (DDP steps are collective). Each
    shard is returned in ascending order (the epoch order shuffles it)."""
    size = len(indices) // processes
    shuffled = seeded_generator(seed, STREAM_SHARDS).permutation(np.asarray(indices))
    return [np.sort(shuffled[p * size:(p + 1) * size]) for p in range(processes)]


def epoch_order(shard_size, seed, rank, epoch):
    """Positions 0..shard_size-1 in process `rank`'s order for `epoch`: a
    fresh shuffle that depends only on (seed, rank, epoch)."""
    return seeded_generator(seed, STREAM_EPOCH, rank, epoch).permutation(shard_size)


def rounds_per_epoch(shard_size, examples_per_round, drop_last):
    if drop_last:
        return shard_size // examples_per_round
    return -(-shard_size // examples_per_round)


# --- models ----------------------------------------------------------------

class LogReg(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(FEATURES, CLASSES)

    def forward(self, x):
        return self.fc(x)


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(FEATURES, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, CLASSES)

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class Cnn(nn.Module):
    """The block CNN ARCHITECTURE above, layer for layer."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, CNN_CONV1_CHANNELS, CNN_KERNEL, padding=CNN_KERNEL // 2)
        self.conv2 = nn.Conv2d(CNN_CONV1_CHANNELS, CNN_CONV2_CHANNELS, CNN_KERNEL, padding=CNN_KERNEL // 2)
        self.fc1 = nn.Linear(CNN_CONV2_CHANNELS * (IMAGE_ROWS // 4) * (IMAGE_COLS // 4), CNN_HIDDEN)
        self.fc2 = nn.Linear(CNN_HIDDEN, CLASSES)

    def forward(self, x):
        x = x.view(-1, 1, IMAGE_ROWS, IMAGE_COLS)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


MODELS = {"logreg": LogReg, "mlp": Mlp, "cnn": Cnn}


def build_model(name, seed):
    """A fresh model with PyTorch's default initialisation drawn from `seed`
    (uniform +-1/sqrt(fan_in) for every weight and bias, as spirt's
    nn_model_init_params; the draws themselves differ)."""
    torch.manual_seed(seed)
    return MODELS[name]()


def make_optimizer(parameters, args):
    if args.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=args.lr)
    if args.optimizer == "momentum":
        return torch.optim.SGD(parameters, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov)
    return torch.optim.Adam(parameters, lr=args.lr)


def round_gradient(model, images, labels, minibatch=None):
    """Fills the parameters' .grad with the gradient of the mean softmax
    cross-entropy over the round's examples. By default in one pass over all
    of them, which is the mean of the B minibatch gradients when the
    minibatches are of equal size (bench/check_e2e_ddp.py checks it). With
    `minibatch` = S, in one forward/backward pass per minibatch of S, as
    spirt's B gradient functions do, each minibatch's mean loss weighted by
    its share of the round's examples so the sum is the same gradient (a
    short last minibatch included). Under DDP the backward pass also averages
    over the processes, once per round: the passes before the last run under
    no_sync(). Returns the mean loss."""
    count = len(labels)
    if minibatch is None or minibatch >= count:
        loss = F.cross_entropy(model(images), labels)
        loss.backward()
        return loss.detach()
    total = 0.0
    starts = range(0, count, minibatch)
    for start in starts:
        part = slice(start, start + minibatch)
        last = start == starts[-1]
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            loss = F.cross_entropy(model(images[part]), labels[part]) * (len(labels[part]) / count)
            loss.backward()
        total = total + loss.detach()
    return total


def train_round(model, optimizer, images, labels, minibatch=None):
    optimizer.zero_grad(set_to_none=True)
    loss = round_gradient(model, images, labels, minibatch)
    optimizer.step()
    return loss


@torch.no_grad()
def test_accuracy(model, images, labels):
    model.eval()
    correct = 0
    for start in range(0, len(labels), EVAL_CHUNK):
        logits = model(images[start:start + EVAL_CHUNK])
        correct += int((logits.argmax(dim=1) == labels[start:start + EVAL_CHUNK]).sum())
    model.train()
    return correct / len(labels)


# --- one process -----------------------------------------------------------

def worker(rank, config, data, result_path):
    """Process `rank` of config["processes"]: joins the group, trains, and
    (rank 0) evaluates and writes the result to `result_path`."""
    os.dup2(2, 1)  # stdout belongs to the parent's one JSON object
    torch.set_num_threads(1)
    args = config["args"]
    if args.pin:
        # As `spirt train --placement peer` places peers: rank r on allowed
        # CPU r mod n.
        allowed = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {allowed[rank % len(allowed)]})
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{config['port']}", rank=rank,
                            world_size=args.processes,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT_S))
    shard = data["shards"][rank]
    shard_x = torch.from_numpy(data["train_x"][shard])
    shard_y = torch.from_numpy(data["train_y"][shard])
    test_x = torch.from_numpy(data["test_x"])
    test_y = torch.from_numpy(data["test_y"])

    model = DistributedDataParallel(build_model(args.model, args.seed))
    optimizer = make_optimizer(model.parameters(), args)
    examples_per_round = args.batches_per_round * args.batch_size
    minibatch = args.batch_size if args.per_minibatch else None
    per_epoch = config["rounds_per_epoch"]
    total_rounds = per_epoch * args.epochs

    curve, epoch_seconds = [], []
    train_seconds = eval_seconds = 0.0
    time_to_target = None
    accuracy = torch.zeros(1, dtype=torch.float64)

    def evaluate(round_number):
        """Rank 0 evaluates; the broadcast of its accuracy makes every
        process wait, so training restarts together and no process's compute
        overlaps the evaluation. Returns whether to stop."""
        nonlocal eval_seconds, time_to_target
        started = time.perf_counter()
        if rank == 0:
            accuracy[0] = test_accuracy(model.module, test_x, test_y)
        dist.broadcast(accuracy, src=0)
        eval_seconds += time.perf_counter() - started
        value = float(accuracy[0])
        curve.append([round_number, round(train_seconds, 6), value])
        reached = args.target_accuracy is not None and value >= args.target_accuracy
        if reached and time_to_target is None:
            time_to_target = train_seconds
        if rank == 0:
            print(f"{PROGRAM}: round {round_number} ({train_seconds:.2f} s training): "
                  f"test accuracy {value:.4f}", file=sys.stderr)
        return reached and args.stop_at_target

    dist.barrier()
    startup_seconds = time.monotonic() - config["launched"]
    stop = evaluate(0)
    round_number = 0
    for epoch in range(args.epochs):
        if stop:
            break
        order = torch.from_numpy(epoch_order(len(shard), args.seed, rank, epoch))
        epoch_started_at = train_seconds
        for within in range(per_epoch):
            started = time.perf_counter()
            picked = order[within * examples_per_round:(within + 1) * examples_per_round]
            train_round(model, optimizer, shard_x[picked], shard_y[picked], minibatch)
            train_seconds += time.perf_counter() - started
            round_number += 1
            if round_number % args.eval_every == 0 or round_number == total_rounds:
                stop = evaluate(round_number)
                if stop:
                    break
        if within == per_epoch - 1:  # only whole epochs count towards the median
            epoch_seconds.append(train_seconds - epoch_started_at)

    if rank == 0:
        result = {
            "processes": args.processes,
            "model": args.model,
            "optimizer": args.optimizer,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "batches_per_round": args.batches_per_round,
            "global_batch": args.processes * examples_per_round,
            "shard_size": len(shard),
            "rounds": round_number,
            "epochs": round(round_number / per_epoch, 4),
            "rounds_per_epoch": per_epoch,
            "time_per_epoch_s": statistics.median(epoch_seconds) if epoch_seconds else None,
            "epoch_seconds": [round(s, 6) for s in epoch_seconds],
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "startup_seconds": startup_seconds,
            "target_accuracy": args.target_accuracy,
            "time_to_target_s": time_to_target,
            "final_test_accuracy": curve[-1][2],
            "accuracy_curve": curve,
        }
        if args.validation:
            result["final_validation_accuracy"] = test_accuracy(
                model.module, torch.from_numpy(data["validation_x"]), torch.from_numpy(data["validation_y"]))
        # Atomically: the parent takes the file's appearance as "done".
        with open(result_path + ".partial", "w") as handle:
            json.dump(result, handle)
        os.replace(result_path + ".partial", result_path)
    dist.barrier()
    dist.destroy_process_group()


# --- the command -----------------------------------------------------------

def parse_args(argv):
    parser = OneLineParser(prog=PROGRAM, description="PyTorch DDP baseline of `spirt bench e2e` "
                           "(one JSON object on stdout; see bench/README.md).")
    parser.add_argument("--processes", type=int, default=1, help="N, processes (= peers)")
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    parser.add_argument("--batch-size", type=int, default=32, help="S, examples per minibatch")
    parser.add_argument("--batches-per-round", type=int, default=2, help="B, minibatches per process per round")
    parser.add_argument("--optimizer", choices=["sgd", "momentum", "adam"], default="momentum")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--nesterov", action="store_true", help="Nesterov momentum (with --optimizer momentum)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--target-accuracy", type=float, default=None, help="test accuracy in (0, 1]")
    parser.add_argument("--stop-at-target", action="store_true", help="stop at the first evaluation >= target")
    parser.add_argument("--eval-every", type=int, default=None, help="rounds between evaluations "
                        "(default: once per epoch)")
    parser.add_argument("--validation", type=int, default=0, help="V, training examples held out")
    parser.add_argument("--per-minibatch", action="store_true", help="one forward/backward pass per "
                        "minibatch of S (as spirt's B functions) instead of one pass over B*S")
    parser.add_argument("--pin", action="store_true", help="pin rank r to allowed CPU r mod n (as spirt "
                        "train places peers); default: the kernel places them")
    parser.add_argument("--drop-last", action="store_true", help="drop each epoch's short last round")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data-dir", default=DATA_DIR)
    args = parser.parse_args(argv)

    positive = ("processes", "batch_size", "batches_per_round", "epochs")
    for name in positive:
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.eval_every is not None and args.eval_every < 1:
        raise UsageError(f"--eval-every must be >= 1 (got {args.eval_every})")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise UsageError(f"--lr must be finite and > 0 (got {args.lr})")
    if not (0 <= args.momentum < 1):
        raise UsageError(f"--momentum must be in [0, 1) (got {args.momentum})")
    if args.nesterov and (args.optimizer != "momentum" or args.momentum == 0):
        raise UsageError("--nesterov needs --optimizer momentum with --momentum > 0")
    if args.target_accuracy is not None and not (0 < args.target_accuracy <= 1):
        raise UsageError(f"--target-accuracy is a fraction in (0, 1] (got {args.target_accuracy})")
    if args.stop_at_target and args.target_accuracy is None:
        raise UsageError("--stop-at-target needs --target-accuracy")
    if args.validation < 0:
        raise UsageError(f"--validation must be >= 0 (got {args.validation})")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0 (got {args.seed})")
    return args


def free_port():
    """A loopback port nobody listens on right now (the rendezvous binds it
    again a moment later; a collision makes init fail loudly, never silently)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run(args):
    train_x, train_y, test_x, test_y, mean, std = load_fashion_mnist(args.data_dir)
    if args.validation >= len(train_y):
        raise UsageError(f"--validation {args.validation} leaves no training examples (of {len(train_y)})")
    train_indices, validation_indices = split_validation(len(train_y), args.validation, args.seed)
    if args.processes > len(train_indices):
        raise UsageError(f"--processes {args.processes} is more than the {len(train_indices)} training examples")
    shards = make_shards(train_indices, args.processes, args.seed)
    shard_size = len(shards[0])
    examples_per_round = args.batch_size * args.batches_per_round
    per_epoch = rounds_per_epoch(shard_size, examples_per_round, args.drop_last)
    if per_epoch == 0:
        raise UsageError(f"--drop-last with B*S = {examples_per_round} > shard size {shard_size}: no rounds")
    if args.eval_every is None:
        args.eval_every = per_epoch

    cores = available_cores()
    if args.processes > cores:
        print(f"{PROGRAM}: warning: {args.processes} processes on {cores} cores: they time-share "
              f"(see bench/README.md)", file=sys.stderr)
    print(f"{PROGRAM}: {args.processes} processes, shards of {shard_size}, {per_epoch} rounds per epoch, "
          f"pixel mean {mean:.5f} std {std:.5f}", file=sys.stderr)

    data = {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "shards": shards,
            "validation_x": train_x[validation_indices], "validation_y": train_y[validation_indices]}
    config = {"args": args, "port": free_port(), "launched": STARTED_AT, "rounds_per_epoch": per_epoch}
    # gloo picks its interface from the host name unless told: keep it on loopback.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    workdir = tempfile.mkdtemp(prefix="e2e_ddp.")
    result_path = os.path.join(workdir, "result.json")
    try:
        # fork: the children share the parent's loaded data (copy-on-write)
        # instead of each re-importing torch and re-reading the files.
        context = torch_mp.start_processes(worker, args=(config, data, result_path), nprocs=args.processes,
                                           join=False, start_method="fork")
        # gloo's teardown (the last barrier, destroy_process_group) can hang
        # with a rank spinning at 100%, seen once in many runs on 2 cores. The
        # result is written before it: give the teardown TEARDOWN_SECONDS once
        # the result is there, then stop what is left, so the benchmark never
        # hangs (the figures are already measured).
        teardown_deadline = None
        while not context.join(timeout=1.0):
            if teardown_deadline is None and os.path.exists(result_path):
                teardown_deadline = time.monotonic() + TEARDOWN_SECONDS
            if teardown_deadline is not None and time.monotonic() > teardown_deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                        process.join()
                print(f"{PROGRAM}: warning: the process group's teardown hung for {TEARDOWN_SECONDS} s after "
                      f"training; stopped it (the result was already written)", file=sys.stderr)
                break
        with open(result_path) as handle:
            result = json.load(handle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result.update({
        "seed": args.seed, "validation": args.validation, "drop_last": args.drop_last,
        "per_minibatch": args.per_minibatch,
        "eval_every": args.eval_every, "cores": cores, "threads_per_process": 1,
        "oversubscribed": args.processes > cores, "pixel_mean": mean, "pixel_std": std,
        "torch_version": torch.__version__,
    })
    return result


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        result = run(args)
    except UsageError as problem:
        print(f"{PROGRAM}: {problem} (try --help)", file=sys.stderr)
        return 2
    except (OSError, ValueError) as problem:
        print(f"{PROGRAM}: {problem}", file=sys.stderr)
        return 1
    except (torch_mp.ProcessRaisedException, torch_mp.ProcessExitedException) as problem:
        # The failed process's traceback is the message; its last line says what.
        lines = [line for line in str(problem).strip().splitlines() if line.strip()]
        print(f"{PROGRAM}: process {problem.error_index} failed: {lines[-1].strip() if lines else problem}",
              file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
