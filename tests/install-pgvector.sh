#!/usr/bin/env bash
# Installs the pgvector extension (Hamming search on bit(n) codes, in the database) into the
# local PostgreSQL, where it is missing: built from the vendored source
# ../shared/vendor/pgvector-0.8.6.tar.gz (beside the checkout; PGVECTOR_TARBALL overrides),
# since Debian 12 packages PostgreSQL 15 but not pgvector. Idempotent and quick when a
# pgvector of 0.7 or later (the first with bit_hamming_ops) is installed; needs root (apt,
# the server's extension folder) on a fresh machine. About a minute to build.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
here="$(cd "$(dirname "$0")" && pwd)"
tarball="${PGVECTOR_TARBALL:-$here/../../shared/vendor/pgvector-0.8.6.tar.gz}"
sha256=b4eb8abc425b465082ae5955d13df5338c32ec1bd441f0eb86d780e3958766a6

# The server the tests start: the newest PostgreSQL installed under /usr/lib/postgresql.
server="$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$server" ]; then
    echo "install-pgvector: no PostgreSQL server is installed (run tests/install-servers.sh)" >&2
    exit 1
fi
major="$(basename "$(dirname "$(dirname "$server")")")"
pg_config="/usr/lib/postgresql/$major/bin/pg_config"

sharedir() {
    if [ -x "$pg_config" ]; then "$pg_config" --sharedir
    elif command -v pg_config >/dev/null; then pg_config --sharedir
    else echo "/usr/share/postgresql/$major"
    fi
}

installed_version() {  # the default_version of the installed extension, empty if none
    local control
    control="$(sharedir)/extension/vector.control"
    [ -f "$control" ] && sed -n "s/^default_version *= *'\(.*\)'.*/\1/p" "$control" || true
}

version="$(installed_version)"
if [ -n "$version" ] && [ "$(printf '%s\n' 0.7.0 "$version" | sort -V | head -n 1)" = 0.7.0 ]; then
    exit 0  # pgvector $version is installed
fi

missing=()
dpkg -s "postgresql-server-dev-$major" >/dev/null 2>&1 || missing+=("postgresql-server-dev-$major")
{ command -v make >/dev/null && command -v gcc >/dev/null; } || missing+=(build-essential)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -f "$tarball" ]; then
    echo "install-pgvector: the pgvector source $tarball is missing" >&2
    exit 1
fi
echo "$sha256  $tarball" | sha256sum --check --quiet -
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
tar -xzf "$tarball" -C "$build"
source_dir="$(ls -d "$build"/pgvector-*/ | head -n 1)"
# OPTFLAGS="": no -march=native, so the build runs on any CPU of the same architecture.
make -s -C "$source_dir" PG_CONFIG="$pg_config" OPTFLAGS="" >/dev/null
make -s -C "$source_dir" PG_CONFIG="$pg_config" OPTFLAGS="" install >/dev/null
version="$(installed_version)"
if [ -z "$version" ]; then
    echo "install-pgvector: built, but no vector.control under $(sharedir)/extension" >&2
    exit 1
fi
echo "install-pgvector: installed pgvector $version for PostgreSQL $major"
