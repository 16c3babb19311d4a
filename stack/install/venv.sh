#!/usr/bin/env bash
# Makes (or refreshes) the project venv .venv from requirements.lock; a no-op when the lock
# has not changed since the last run. pip's own cache keeps re-creation fast.
COMPONENT=venv
source "$(dirname "$0")/common.sh"
venv="$REPO_DIR/.venv"
want=$(sha256sum "$REPO_DIR/requirements.lock" | cut -c1-16)
[ -x "$venv/bin/python" ] && [ "$(cat "$venv/.lock-hash" 2>/dev/null)" = "$want" ] && exit 0
log "installing requirements.lock into .venv"
[ -x "$venv/bin/python" ] || python3.11 -m venv "$venv"
"$venv/bin/pip" install -q -r "$REPO_DIR/requirements.lock"
echo "$want" > "$venv/.lock-hash"
