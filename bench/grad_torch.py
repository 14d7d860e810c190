"""grad_torch.py -- the PyTorch baseline of `spirt bench grad`.

Times one training step's gradient computation -- zero the gradients, forward,
softmax cross-entropy (mean over the batch), backward -- for the same models
spirt builds (src/nn/model.c), on random inputs, with one thread. Prints one
JSON object on stdout: {"torch_version": ..., "rows": [{"model", "batch",
"param_count", "ms_per_step", "cpu_ms_per_step", "samples_per_s"}, ...]}.
cpu_ms_per_step is process CPU time: on a busy machine it shows what the
step costs when wall time is inflated by waiting for a core.

Each timed run is `--steps` consecutive steps; the figure is the median of
`--repeats` runs after `--warmup` unmeasured steps, as spirt's side does.

Run with Debian's interpreter (/usr/bin/python3, python3-torch):
    /usr/bin/python3 bench/grad_torch.py --models mlp,cnn --batch 64
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn as nn


def build(model, conv1, conv2, hidden):
    """The architectures of src/nn/model.c, layer for layer."""
    if model == "logreg":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    if model == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(),
                             nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    if model == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, conv1, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(conv1, conv2, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(conv2 * 7 * 7, hidden), nn.ReLU(),
            nn.Linear(hidden, 10))
    raise SystemExit(f"unknown model {model}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cnn-conv1", type=int, default=16)
    parser.add_argument("--cnn-conv2", type=int, default=32)
    parser.add_argument("--cnn-hidden", type=int, default=128)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    rows = []
    for name in args.models.split(","):
        model = build(name, args.cnn_conv1, args.cnn_conv2, args.cnn_hidden)
        images = torch.rand(args.batch, 1, 28, 28)
        labels = torch.randint(0, 10, (args.batch,))
        loss_fn = nn.CrossEntropyLoss()

        def step():
            model.zero_grad(set_to_none=False)
            loss = loss_fn(model(images), labels)
            loss.backward()

        for _ in range(args.warmup):
            step()
        times, cpu_times = [], []
        for _ in range(args.repeats):
            start, cpu_start = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step()
            times.append((time.perf_counter() - start) / args.steps)
            cpu_times.append((time.process_time() - cpu_start) / args.steps)
        ms = statistics.median(times) * 1e3
        rows.append({
            "model": name,
            "batch": args.batch,
            "param_count": sum(p.numel() for p in model.parameters()),
            "ms_per_step": ms,
            "cpu_ms_per_step": statistics.median(cpu_times) * 1e3,
            "samples_per_s": args.batch / (ms / 1e3),
        })
    print(json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads(),
                      "rows": rows}))


if __name__ == "__main__":
    main()
