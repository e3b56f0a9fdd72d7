#!/usr/bin/env python3
"""The PyTorch baselines of train_vs_torch.py: `pserv train`'s job, trained by PyTorch on the CPU.

    python3 bench/torch_train.py [--ddp-rank R --master-port P] [--workers W] [--batch B]
                                 [--hidden 256,128] [--optimizer adam] [--lr 0.001] [--epochs 15]
                                 [--seed 1] [--target 0.88] [--limit N] [--threads T] [--data DIR]

It replays what `pserv train` does on the CPU (cli/worker_loop.c, models/cpu/), as exactly as the
arithmetic allows:
- model: Linear + ReLU layers 784-hidden...-10, cross-entropy (mean over the batch); the weights
  start at pserv's values (uniform in +-sqrt(6/fan_in) from the same splitmix64 stream and seed,
  biases 0), so both start from the same point;
- data: Fashion-MNIST from the gzip'd IDX files, pixels / 255 as float32; the training set is
  cut into W equal contiguous shards (the first count/W samples go to worker 0, ...), each
  shuffled every epoch with pserv's Fisher-Yates and seed (in place: an epoch shuffles the last
  epoch's order); an epoch is count/W/B steps;
- a step's gradient is the mean over W x B samples, B from each shard, as pserv's sync mode sums
  the W workers' pushes scaled by 1/W. One process (default) takes a batch of W x B samples
  made of the W shards' B; with --ddp-rank, rank R of a W-rank DistributedDataParallel job over
  gloo takes shard R's B and DDP averages the gradients;
- optimizer with pserv's hyper-parameters (Adam: betas 0.9/0.999, eps 1e-8; momentum 0.9;
  Adagrad eps 1e-8; no weight decay);
- after every epoch the whole test set is evaluated (each DDP rank evaluates all of it, as
  every pserv worker does); training stops at the target accuracy or after --epochs.

Timing is pserv's: from just before the first epoch to the end of the last evaluation, so the
evaluations count (pserv's "s training" and samples/s include them). Samples are W x B x steps per
epoch. The epochs' shuffled orders are computed before the clock starts (pure Python is slow at
what pserv does in C in microseconds).

Prints one JSON line on stdout (rank 0 only with --ddp-rank).
"""
import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def splitmix64(state, count):
    """The next `count` outputs of pserv's splitmix64 generator from `state`, as uint64."""
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(state) + k * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def pserv_init(dims, seed):
    """pserv_mlp_init: weights (out x in, row-major) uniform in +-sqrtf(6/in), biases 0."""
    params, drawn = [], 0
    for l in range(len(dims) - 1):
        fan_in, out = dims[l], dims[l + 1]
        n = fan_in * out
        z = splitmix64((seed + drawn * GOLDEN) & MASK64, n)
        drawn += n
        u = (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        bound = np.sqrt(np.float32(6.0) / np.float32(fan_in), dtype=np.float32)
        params.append(((2.0 * u - 1.0) * np.float64(bound)).astype(np.float32).reshape(out, fan_in))
        params.append(np.zeros(out, dtype=np.float32))
    return params


def pserv_shuffle(idx, seed):
    """cli/worker_loop.c's shuffle(), in place: every epoch shuffles the previous epoch's order."""
    n = len(idx)
    if n < 2:
        return idx
    r = splitmix64(seed & MASK64, n - 1).tolist()
    for k, i in enumerate(range(n, 1, -1)):
        j = r[k] % i
        idx[i - 1], idx[j] = idx[j], idx[i - 1]
    return idx


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim < 1 or ndim > 3:
        raise ValueError("%s: not an unsigned-byte IDX file" % path)
    shape = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError("%s: %d bytes of data for shape %s" % (path, arr.size, shape))
    return arr.reshape(shape)


def load(data_dir, prefix):
    x = read_idx(os.path.join(data_dir, prefix + "-images-idx3-ubyte.gz"))
    y = read_idx(os.path.join(data_dir, prefix + "-labels-idx1-ubyte.gz"))
    x = x.reshape(x.shape[0], -1).astype(np.float32) * np.float32(1.0 / 255.0)
    return x, y.astype(np.int64)


def blas_loaded():
    """The BLAS and OpenMP libraries this process has mapped, from /proc/self/maps."""
    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1] if len(line.split()) >= 6 else ""
            base = os.path.basename(path)
            if "blas" in base or "gomp" in base or "lapack" in base:
                libs.add(path)
    return sorted(libs)


def gemm_gflops(torch, m, k, n, reps=30):
    """GFLOP/s of an m x k by k x n float32 matmul: the BLAS torch actually calls, measured."""
    a, b = torch.rand(m, k), torch.rand(k, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2.0 * m * k * n * reps / (time.perf_counter() - t) / 1e9


def make_optimizer(torch, name, params, lr, foreach):
    kw = {"foreach": True} if foreach else {}
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, **kw)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, **kw)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, **kw)
    if name == "momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, **kw)
    if name == "adagrad":
        return torch.optim.Adagrad(params, lr=lr, eps=1e-8, **kw)
    raise ValueError("optimizer %s" % name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--workers", type=int, default=2, help="pserv's workers: shards, and the DDP world size")
    ap.add_argument("--batch", type=int, default=128, help="samples per step per worker (pserv's --batch)")
    ap.add_argument("--hidden", default="256,128")
    ap.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adam", "adamw", "adagrad"])
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", type=float, default=0.88)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave torch's choice)")
    ap.add_argument("--foreach", action="store_true", help="the optimizer's multi-tensor (foreach) implementation")
    ap.add_argument("--ddp-rank", type=int, default=-1, help="be this rank of a --workers-rank DDP job over gloo")
    ap.add_argument("--master-port", type=int, default=0, help="DDP rendezvous port on 127.0.0.1")
    a = ap.parse_args()
    ddp = a.ddp_rank >= 0
    if ddp and not (0 <= a.ddp_rank < a.workers and a.master_port > 0):
        ap.error("--ddp-rank needs 0 <= rank < --workers and --master-port")

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if a.threads > 0:
        torch.set_num_threads(a.threads)
    x_train, y_train = load(a.data, "train")
    x_test, y_test = load(a.data, "t10k")
    dims = [x_train.shape[1]] + [int(h) for h in a.hidden.split(",") if h] + [10]
    count = min(a.limit, len(x_train)) if a.limit else len(x_train)
    per = count // a.workers
    steps = per // a.batch
    if steps == 0:
        sys.exit("torch_train: %d samples per worker is less than one batch of %d" % (per, a.batch))

    layers = []
    for l in range(len(dims) - 1):
        layers.append(nn.Linear(dims[l], dims[l + 1]))
        if l + 2 < len(dims):
            layers.append(nn.ReLU())
    model = nn.Sequential(*layers)
    with torch.no_grad():
        linears = [m for m in model if isinstance(m, nn.Linear)]
        init = pserv_init(dims, a.seed)
        for l, lin in enumerate(linears):
            lin.weight.copy_(torch.from_numpy(init[2 * l]))
            lin.bias.copy_(torch.from_numpy(init[2 * l + 1]))

    net = model
    if ddp:
        import torch.distributed as dist
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % a.master_port, rank=a.ddp_rank,
                                world_size=a.workers)
        net = nn.parallel.DistributedDataParallel(model)
    opt = make_optimizer(torch, a.optimizer, net.parameters(), a.lr, a.foreach)

    # The shards a process trains on: its own with DDP, all W (one batch is B from each) without.
    ranks = [a.ddp_rank] if ddp else list(range(a.workers))
    orders = []
    shards = [list(range(r * per, (r + 1) * per)) for r in ranks]
    for epoch in range(1, a.epochs + 1):
        for r, shard in zip(ranks, shards):
            pserv_shuffle(shard, a.seed * 1000003 + r * 7919 + epoch)
        # step s takes rows [s*B, (s+1)*B) of every shard, in rank order
        per_step = np.stack([np.asarray(s[:steps * a.batch]).reshape(steps, a.batch) for s in shards], axis=1)
        orders.append(torch.from_numpy(per_step.reshape(steps, len(ranks) * a.batch)))

    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    xe, ye = torch.from_numpy(x_test), torch.from_numpy(y_test)
    gflops = gemm_gflops(torch, a.batch * len(ranks), dims[0], dims[1])

    history = []
    accuracy, epochs_run, reached = 0.0, 0, False
    start = time.perf_counter()
    for epoch in range(1, a.epochs + 1):
        net.train()
        order = orders[epoch - 1]
        loss_sum = 0.0
        for s in range(steps):
            rows = order[s]
            xb, yb = xt.index_select(0, rows), yt.index_select(0, rows)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(xb), yb)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
        net.eval()
        with torch.no_grad():
            logits = model(xe)
            test_loss = F.cross_entropy(logits, ye).item()
            accuracy = (logits.argmax(1) == ye).sum().item() / len(ye)
        stop = accuracy >= a.target
        if ddp:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, 0)  # rank 0 decides, as pserv's workers all see the same accuracy
            stop = bool(flag.item())
        epochs_run = epoch
        history.append({"epoch": epoch, "train_loss": loss_sum / steps, "test_loss": test_loss,
                        "test_accuracy": accuracy, "seconds": time.perf_counter() - start})
        if stop:
            reached = accuracy >= a.target
            break
    seconds = time.perf_counter() - start
    samples = epochs_run * steps * a.batch * a.workers
    if ddp:
        dist.barrier()
        dist.destroy_process_group()
        if a.ddp_rank != 0:
            return 0
    print(json.dumps({
        "impl": "torch-ddp-gloo" if ddp else "torch-1proc",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "blas_loaded": blas_loaded(),
        "gemm_gflops": gflops,
        "gemm_shape": [a.batch * len(ranks), dims[0], dims[1]],
        "dims": dims,
        "global_batch": a.batch * a.workers,
        "steps_per_epoch": steps,
        "epochs": epochs_run,
        "test_accuracy": accuracy,
        "reached": reached,
        "samples": samples,
        "train_seconds": seconds,
        "samples_per_s": samples / seconds,
        "time_to_target_s": seconds if reached else None,
        "history": history,
    }), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
