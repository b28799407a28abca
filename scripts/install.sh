#!/usr/bin/env bash
# Creates .venv with everything radar needs. torch comes FIRST: otherwise nflows pulls the newest torch
# with several GB of CUDA packages. On a GPU machine install the CUDA build of torch 2.13.0 instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip wheel setuptools
pip install -q "torch==2.13.0"
pip install -q -e ".[all,test]"
python -c "import torch, dask, dask_awkward, coffea, fastjet, pythia8mc; print('radar env: torch', torch.__version__, '| dask', dask.__version__, '| dask-awkward', dask_awkward.__version__, '| coffea', coffea.__version__)"
