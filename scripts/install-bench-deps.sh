#!/usr/bin/env bash
# Installs the systems zonekv-bench compares ZoneKV with: etcd (Debian's etcd-server, 3
# members started by the harness) and PostgreSQL (Debian's postgresql, a local server started
# by the harness as the postgres user). Neither service is enabled; the harness runs its own.
set -euo pipefail
need_apt=()
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
if ((${#need_apt[@]})); then
    echo "installing ${need_apt[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
