#!/usr/bin/env bash
# Installs Prometheus, Alertmanager, Redis, PostgreSQL, the Redis/Postgres exporters, wrk and
# Chromium (run headless by tests/ui, the trace UI's browser tests) from Debian's packages.
# Services are never started by dpkg here: the stack's supervisor runs them on loopback with
# their own data folders.
COMPONENT=apt
source "$(dirname "$0")/common.sh"
missing=()
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { log "all Debian packages present"; exit 0; }
require apt-get "Debian's package manager"
[ "$(id -u)" -eq 0 ] || die "installing ${missing[*]} needs root (apt-get)"
log "installing ${missing[*]}"
stamp="$SOMA_CACHE/apt-updated"
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
  apt-get update -qq && touch "$stamp"
fi
# policy-rc.d answering 101 keeps dpkg from starting the packaged daemons on their ports.
restore_policy=""
if [ ! -f /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; restore_policy=1
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ -n "$restore_policy" ] && rm -f /usr/sbin/policy-rc.d
# Debian starts nothing under policy-rc.d, but stop anything a postinst may have launched anyway.
for d in prometheus prometheus-alertmanager redis-server prometheus-redis-exporter prometheus-postgres-exporter; do
  pkill -x "$d" 2>/dev/null || true
done
