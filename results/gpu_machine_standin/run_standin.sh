#!/usr/bin/env bash
# The GPU check's dry run in a stand-in of the GPU machine's Python environment, on a CPU machine: a virtual
# environment of Python 3.12 with that machine's packages (machine_packages.txt: torch 2.11, numpy 2.5,
# huggingface_hub 1.33, onnxruntime 1.30, ...), none of this repository's pins, and the wheels of `make gpu-wheels`
# installed the way the real check installs them (only those whose modules are missing, --no-deps, into the run's
# own folder). It shows what the test suite's dry run cannot: that the check's code runs on that machine's library
# versions and with nothing more than that machine has plus the wheel folder.
#
#   results/gpu_machine_standin/run_standin.sh PYTHON3.12 VENV OUT    (from the repository's root, after make gpu-wheels)
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 PYTHON3.12 VENV OUT" >&2; exit 2; }
python=$1 venv=$2 out=$3
here=results/gpu_machine_standin
[ -f scripts/gpu_check.py ] || { echo "$0: run it from the repository's root" >&2; exit 2; }
[ -d gpu_wheels ] || { echo "$0: gpu_wheels/ not found: run make gpu-wheels first" >&2; exit 2; }
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' \
  || { echo "$0: $python is not Python 3.12, the GPU machine's" >&2; exit 2; }
for folder in "$venv" "$out"; do  # never remove what this script did not make
  [ ! -e "$folder" ] || { echo "$0: $folder already exists: name a new folder" >&2; exit 2; }
done
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$here/machine_packages.txt"
mkdir -p "$out"
"$venv/bin/python" -m pip freeze --all > "$out/freeze.txt"
# The checkout is not installed: the check runs the package from it, as on the GPU machine.
PYTHONUNBUFFERED=1 "$venv/bin/python" scripts/gpu_check.py --dry-run --wheels gpu_wheels \
  --work "$out/work" --out "$out/report" 2>&1 | tee "$out/gpu_check.log"
