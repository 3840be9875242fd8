#!/bin/sh
# SPDX-License-Identifier: GPL-3.0-or-later
# Runs keepalived in the foreground for the service manager:  keepalived-start.sh RUN_DIR CONFIG
#
# A keepalived killed with SIGKILL (main and VRRP processes) leaves its addresses on the
# interface and its pid files behind; its processes may stay zombies for a while where PID 1
# reaps slowly, and keepalived refuses to start ("daemon is already running") until they are
# gone, keeping the stale addresses meanwhile. So: wait (at most 5 s) until no keepalived of
# the old pid files still runs (a zombie does not), remove the pid files, and start at once:
# the new keepalived removes the stale addresses as it starts, long before the peer's
# master-down time (3.5 s) gives the addresses to the peer.
set -eu
run_dir=$1
config=$2
mkdir -p "$run_dir"
for pid_file in "$run_dir/keepalived.pid" "$run_dir/vrrp.pid"; do
  pid=$(cat "$pid_file" 2>/dev/null) || continue
  tries=50
  while [ "$tries" -gt 0 ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = keepalived ] &&
        [ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)" != Z ]; do
    sleep 0.1
    tries=$((tries - 1))
  done
  if [ "$tries" -eq 0 ]; then
    echo "keepalived-start: keepalived $pid ($pid_file) still runs" >&2
    exit 1
  fi
  rm -f "$pid_file"
done
# -n: foreground, -l: log to the console (the service manager's log), -D: detailed state
# changes, -P: VRRP only (no LVS checker).
exec /usr/sbin/keepalived -n -l -D -P -f "$config" \
  -p "$run_dir/keepalived.pid" -r "$run_dir/vrrp.pid"
