"""check_e2e_ddp.py -- hand-run checks of the semantics bench/e2e_ddp.py relies on.

Not part of CTest (torch is a benchmark-only dependency). Run:

    /usr/bin/python3 bench/check_e2e_ddp.py

Each check compares the baseline's code with an independent way of computing
the same thing on the real Fashion-MNIST files:
  - the pixel statistics against a naive double-precision pass and the
    published figures;
  - one round's gradient (one pass over B*S examples, or one per minibatch)
    against the mean of B separate minibatch gradients, for every model, and
    a short round's against the mean of per-example gradients;
  - the shards: disjoint, equal, complete (with the hold-out and the
    remainder), seeded; each epoch's rounds visit each example once;
  - a real 2-process DDP round against one process stepping on the two
    processes' examples together.
Prints one line per check; exit status 1 if any fails.
"""
import os
import sys
import tempfile
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e_ddp as baseline  # noqa: E402  (sets the thread variables first)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as torch_mp  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

torch.set_num_threads(1)
DATA = baseline.load_fashion_mnist(baseline.DATA_DIR)
TRAIN_X, TRAIN_Y = DATA[0], DATA[1]


def check_pixel_statistics():
    images, _ = baseline.load_split(baseline.DATA_DIR, "train")
    mean, std = baseline.pixel_statistics(images)
    pixels = images.astype(np.float32) / np.float32(255.0)  # spirt's data_load values
    naive_mean = pixels.mean(dtype=np.float64)
    naive_std = np.sqrt(((pixels.astype(np.float64) - naive_mean) ** 2).mean())
    assert abs(mean - naive_mean) < 1e-12 and abs(std - naive_std) < 1e-12, (mean, naive_mean, std, naive_std)
    # The figures usually quoted for Fashion-MNIST's training set.
    assert abs(mean - 0.28604) < 5e-6 and abs(std - 0.35302) < 5e-6, (mean, std)
    normalized = TRAIN_X.astype(np.float64)
    assert abs(normalized.mean()) < 1e-6 and abs(normalized.std() - 1.0) < 1e-6


def flat_gradient(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def gradient_of(model, action):
    model.zero_grad(set_to_none=True)
    action()
    return flat_gradient(model).clone()


def assert_same_gradient(name, got, reference):
    error = (got - reference).abs().max().item()
    assert error <= 1e-12 * max(1.0, reference.abs().max().item()), f"{name}: max difference {error}"
    assert reference.abs().max().item() > 1e-3, f"{name}: a vanishing gradient proves nothing"


def check_round_gradient_is_mean_of_minibatch_gradients():
    batches, size = 3, 8
    images = torch.from_numpy(TRAIN_X[:batches * size]).double()
    labels = torch.from_numpy(TRAIN_Y[:batches * size])
    for name in sorted(baseline.MODELS):
        model = baseline.build_model(name, seed=7).double()

        def separate_passes():
            for b in range(batches):
                part = slice(b * size, (b + 1) * size)
                (torch.nn.functional.cross_entropy(model(images[part]), labels[part]) / batches).backward()

        reference = gradient_of(model, separate_passes)
        one_pass = gradient_of(model, lambda: baseline.round_gradient(model, images, labels))
        assert_same_gradient(name, one_pass, reference)
        per_minibatch = gradient_of(model, lambda: baseline.round_gradient(model, images, labels, size))
        assert_same_gradient(f"{name} per minibatch", per_minibatch, reference)


def check_short_round_gradient_is_mean_over_its_examples():
    # 20 examples in minibatches of 8: 8 + 8 + 4, as a short last round has.
    images = torch.from_numpy(TRAIN_X[100:120]).double()
    labels = torch.from_numpy(TRAIN_Y[100:120])
    for name in ("logreg", "mlp"):
        model = baseline.build_model(name, seed=5).double()

        def example_by_example():  # the mean over the 20 examples, from its definition
            for k in range(len(labels)):
                loss = torch.nn.functional.cross_entropy(model(images[k:k + 1]), labels[k:k + 1])
                (loss / len(labels)).backward()

        reference = gradient_of(model, example_by_example)
        for minibatch in (None, 8):
            got = gradient_of(model, lambda: baseline.round_gradient(model, images, labels, minibatch))
            assert_same_gradient(f"{name} minibatch {minibatch}", got, reference)


def check_shards_disjoint_equal_complete():
    count = len(TRAIN_Y)
    for validation in (0, 5000, 1):
        kept, held_out = baseline.split_validation(count, validation, seed=1)
        assert len(held_out) == validation and len(np.intersect1d(kept, held_out)) == 0
        assert np.array_equal(np.union1d(kept, held_out), np.arange(count))
        for processes in (1, 2, 3, 7, 8):
            shards = baseline.make_shards(kept, processes, seed=1)
            assert len(shards) == processes
            assert all(len(s) == len(kept) // processes for s in shards)
            together = np.concatenate(shards)
            assert len(np.unique(together)) == len(together), "shards overlap"
            left_out = np.setdiff1d(kept, together)
            assert np.isin(together, kept).all(), "a shard holds a held-out or unknown example"
            assert len(left_out) == len(kept) % processes, "the remainder is not the only thing left out"
    kept, _ = baseline.split_validation(count, 0, seed=1)
    same = baseline.make_shards(kept, 4, seed=1)
    again = baseline.make_shards(kept, 4, seed=1)
    other = baseline.make_shards(kept, 4, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(same, again)), "the same seed gave other shards"
    assert not np.array_equal(same[0], other[0]), "another seed gave the same shards"
    # IID: every class is in every shard in about its overall share (10%).
    for shard in baseline.make_shards(kept, 8, seed=1):
        shares = np.bincount(TRAIN_Y[shard], minlength=10) / len(shard)
        assert np.abs(shares - 0.1).max() < 0.02, shares


def check_epoch_rounds_visit_each_example_once():
    shard_size, per_round = 1000, 64  # 1000 = 15 * 64 + 40: a short last round
    for drop_last, visited in ((False, 1000), (True, 960)):
        rounds = baseline.rounds_per_epoch(shard_size, per_round, drop_last)
        for epoch in range(2):
            order = baseline.epoch_order(shard_size, 1, 0, epoch)
            seen = np.concatenate([order[r * per_round:(r + 1) * per_round] for r in range(rounds)])
            assert len(seen) == visited and len(np.unique(seen)) == visited
    first = baseline.epoch_order(shard_size, 1, 0, 0)
    assert not np.array_equal(first, baseline.epoch_order(shard_size, 1, 0, 1)), "no reshuffle between epochs"
    assert not np.array_equal(first, baseline.epoch_order(shard_size, 1, 1, 0)), "two ranks share an order"


class Options:
    """The subset of e2e_ddp's options that make_optimizer reads."""

    def __init__(self, optimizer, lr):
        self.optimizer, self.lr, self.momentum, self.nesterov = optimizer, lr, 0.9, False


ROUNDS, PER_PROCESS = 3, 16


def examples(round_number, rank):
    start = (round_number * 2 + rank) * PER_PROCESS
    return torch.from_numpy(TRAIN_X[start:start + PER_PROCESS]), torch.from_numpy(TRAIN_Y[start:start + PER_PROCESS])


def ddp_process(rank, name, options, minibatch, port, path):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = DistributedDataParallel(baseline.build_model(name, seed=rank + 3))  # DDP broadcasts rank 0's
    optimizer = baseline.make_optimizer(model.parameters(), options)
    for r in range(ROUNDS):
        baseline.train_round(model, optimizer, *examples(r, rank), minibatch)
    if rank == 0:
        torch.save(model.module.state_dict(), path)
    dist.barrier()
    dist.destroy_process_group()


def check_ddp_round_is_one_step_on_all_examples():
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    cases = (("mlp", Options("momentum", 0.05), None), ("logreg", Options("adam", 0.01), None),
             ("mlp", Options("sgd", 0.1), PER_PROCESS // 4))  # no_sync() on all but the last pass
    for name, options, minibatch in cases:
        with tempfile.TemporaryDirectory() as workdir:
            path = os.path.join(workdir, "params.pt")
            torch_mp.start_processes(ddp_process, args=(name, options, minibatch, baseline.free_port(), path),
                                     nprocs=2, start_method="fork")
            trained = torch.load(path)
        reference = baseline.build_model(name, seed=3)
        optimizer = baseline.make_optimizer(reference.parameters(), options)
        for r in range(ROUNDS):
            (x0, y0), (x1, y1) = examples(r, 0), examples(r, 1)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(torch.cat([x0, x1])), torch.cat([y0, y1])).backward()
            optimizer.step()
        start = baseline.build_model(name, seed=3).state_dict()
        for key, value in reference.state_dict().items():
            error = (trained[key] - value).abs().max().item()
            moved = (value - start[key]).abs().max().item()
            assert error < 1e-5, f"{name} {key}: DDP differs from one step on all examples by {error}"
            assert moved > 1e-4, f"{name} {key}: the parameters did not move ({moved})"


def main():
    checks = [value for key, value in globals().items() if key.startswith("check_")]
    failed = 0
    for check in checks:
        try:
            check()
            print(f"PASS {check.__name__}")
        except Exception:  # report every failing check, not just the first
            failed += 1
            print(f"FAIL {check.__name__}\n{traceback.format_exc()}")
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
