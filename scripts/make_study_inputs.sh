#!/bin/bash
# The issue-6 study dataset: LHCO-like generated QCD (data + held-out test), a "simulation" QCD variant, signal.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/study_inputs
R=.venv/bin/radar
D=runs/study_inputs
$R generate qcd        -n 100000 --seed 201 --pthat-min 1100 --events-per-task 2500 -o $D/qcd.h5 --no-progress
$R process $D/qcd.h5 -o $D/qcd.parquet
$R generate resonance  -n 6000   --seed 203 --events-per-task 1500 -o $D/signal.h5 --no-progress
$R process $D/signal.h5 -o $D/signal.parquet
$R generate simulation -n 40000  --seed 202 --pthat-min 1100 --events-per-task 2500 -o $D/simulation.h5 --no-progress
$R process $D/simulation.h5 -o $D/simulation.parquet
