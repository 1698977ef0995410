#!/bin/bash
# The GPU checks of benchmarks/README.md, as run on a lent device (the `device` tool runs it in
# the repository root with $OUT for its outputs). The machine had jax, flax, optax and orbax but
# not ml_collections: copy ml_collections and yaml from this project's venv into .device_site
# (git-ignored locally) and carry it. Never required: CI has no GPU.
set -u
mkdir -p "$OUT"
export PYTHONPATH=.:.device_site
{
python3 -m benchmarks.samplers --score unet_cifar10 --batch 128 --steps 1000 \
    --methods euler_maruyama ddim --rounds 3 --calls 20
python3 -m benchmarks.train_step --cases cifar10 --batch-unet 128 --calls 5 --repeats 3
python3 -m benchmarks.likelihood --dims 256 784 --exact-dims 64
} > "$OUT/device.log" 2>&1
grep -v "^WARNING\|^I0000\|^W0000" "$OUT/device.log"
