#!/usr/bin/env bash
# Installs what the tests start, where it is missing: PostgreSQL (the storage tests) and
# Chromium with its driver (the search page's browser test). Idempotent and quick when they
# are there; needs root (apt) on a fresh machine.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
missing=()
if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql)
fi
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
bash "$(dirname "$0")/install-pgvector.sh"
