#!/usr/bin/env bash
# The side-by-side comparison with etcd (issue 15), in one command:
#
#   scripts/etcd-compare.sh            # the full matrix; results in docs/etcd-comparison/
#   scripts/etcd-compare.sh --smoke    # a few seconds per system (what CI runs)
#
# Installs what it needs through apt-get when missing (etcd-server and etcd-client for etcd 3.4,
# protobuf-compiler for the etcd-client crate's build, fonts-dejavu-core for the charts; needs
# root or sudo for that), builds opkv with the `etcd` feature (release), then runs
# `opkv compare-etcd`, which starts a 3-node etcd cluster on loopback, runs the matrix and the
# failover runs, stops it, then does the same with a 3-node cluster of ours. Extra arguments go
# to `opkv compare-etcd` (see `opkv compare-etcd --help`).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's etcd-server package starts a single-node etcd as a service on the default ports;
# the comparison uses its own ports and data directories, so that one only costs a little CPU.
# Stop it where systemd runs, so it does not share the cores with the measured clusters.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  ${sudo:-} systemctl stop etcd || true
fi

etcd_version="$(etcd --version)"
echo "${etcd_version%%$'\n'*}"
# OPKV_PROFILE=debug builds faster (CI's smoke pass, which asserts no timing); the measured runs
# use the release build.
profile="${OPKV_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --quiet -p omnipaxos_kv --features etcd
  opkv=target/release/opkv
else
  cargo build --quiet -p omnipaxos_kv --features etcd
  opkv=target/debug/opkv
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
status=0
"$opkv" compare-etcd "$@" || status=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
