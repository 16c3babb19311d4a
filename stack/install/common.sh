# Shared by every install script: pinned versions, the cache root and small helpers.
# The cache lives outside the git checkout so that a fresh clone (CI) reuses it.
set -euo pipefail
STACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$STACK_DIR/.." && pwd)"
# shellcheck source=../versions.env
source "$STACK_DIR/versions.env"
SOMA_CACHE="${SOMA_CACHE:-$HOME/.cache/somaagent-stack}"
mkdir -p "$SOMA_CACHE"

log() { printf '[install %s] %s\n' "${COMPONENT:-?}" "$*" >&2; }
die() { printf '[install %s] ERROR: %s\n' "${COMPONENT:-?}" "$*" >&2; exit 1; }

# require TOOL WHAT: one clear message per missing prerequisite.
require() {
  command -v "$1" >/dev/null 2>&1 || die "prerequisite missing: '$1' ($2) is not on PATH"
}
