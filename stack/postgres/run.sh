#!/usr/bin/env bash
# Supervisor's command for PostgreSQL (runs as the postgres user): initialises the cluster on
# first start (trust auth, loopback only), then runs the server in the foreground.
# Usage: run.sh DATA_DIR SOCKET_DIR
set -euo pipefail
data=$1 sockets=$2
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
if [ ! -f "$data/PG_VERSION" ]; then
  "$bin/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
fi
exec "$bin/postgres" -D "$data" -k "$sockets" -h 127.0.0.1 -p 5432 \
  -c fsync=off -c synchronous_commit=off -c log_destination=stderr -c logging_collector=off
