#!/usr/bin/env bash
# Creates the pinned Python environment for the parity scripts in tools/parity/.venv.
# Only fixture authors need it (the torch wheel is large); CI runs against committed fixtures.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${PARITY_VENV:-$here/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
"$venv/bin/python" -c "import diffusers, torch; print('parity env ready:', 'diffusers', diffusers.__version__, 'torch', torch.__version__)"
