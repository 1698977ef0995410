#!/bin/bash
# The GPU check of issue 17 (fourth call): the CIFAR-10 U-Net's training step against its bare
# forward+backward (ml_collections and PyYAML carried in .device_site: the machine lacks them).
set -u
mkdir -p "$OUT"
export PYTHONPATH=.:.device_site
timeout 190 python3 -u -m benchmarks.train_step --cases cifar10 --batch-unet 128 --calls 5 --repeats 3 > "$OUT/device.log" 2>&1
grep -v "^WARNING\|^I0000\|^W0000" "$OUT/device.log" | tail -20
