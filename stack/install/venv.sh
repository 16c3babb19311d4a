#!/usr/bin/env bash
# Makes (or refreshes) the project venv .venv from requirements.lock, then installs the package
# itself editable (its entry points: the distro opentelemetry-instrument loads, the pytest
# plugin); a no-op when neither the lock nor pyproject.toml changed since the last run. pip's own
# cache keeps re-creation fast.
COMPONENT=venv
source "$(dirname "$0")/common.sh"
venv="$REPO_DIR/.venv"
want=$(cat "$REPO_DIR/requirements.lock" "$REPO_DIR/pyproject.toml" | sha256sum | cut -c1-16)
[ -x "$venv/bin/python" ] && [ "$(cat "$venv/.lock-hash" 2>/dev/null)" = "$want" ] && exit 0
log "installing requirements.lock into .venv"
[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
"$venv/bin/pip" install -q -r "$REPO_DIR/requirements.lock"
"$venv/bin/pip" uninstall -q -y opentelemetry-distro 2>/dev/null || true  # a venv made before 0.2.0
"$venv/bin/pip" install -q --no-deps -e "$REPO_DIR"
echo "$want" > "$venv/.lock-hash"
