#!/usr/bin/env bash
# Installs the database servers the tests start (PostgreSQL), where they are missing.
# Idempotent and quick when they are there; needs root (apt) on a fresh machine.
set -euo pipefail
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends postgresql >/dev/null
fi
