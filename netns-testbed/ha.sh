# shellcheck shell=bash
# ha.sh: helpers of the ha-* scenarios (an active-backup pair of directors,
# keepalived, flow sync). Source it after lib.sh and scenario_begin
# --directors 2:
#
#   . "$(dirname "$0")/../lib.sh"
#   scenario_begin --servers 3 --directors 2 --mode dr
#   . "$(dirname "$0")/../ha.sh"
#
# Director A runs in dir1 (control socket $SOCK, `adm`), B in dir2 ($SOCK_B,
# `admb`). Every name here starts with ha_ (or is adm/admb-like) so it cannot
# clash with lib.sh. Both directors are started with start_bg (their PIDs in
# $HA_A_PID / $HA_B_PID), so the cleanup trap and `testbed down` stop them;
# DIRECTOR_PID follows the director that is meant to be active, for lib.sh's
# director_alive.

SOCK_B="$WORK/b.sock"
HA_A_PID=""
HA_B_PID=""
HA_SYNC_PORT=8848
HA_KA_DIR=""
HA_REPO=$(cd "$TB_DIR/.." && pwd)

admb() { ip netns exec "$DIR2_NS" "$ULVS_BIN/ulvsadm" --socket "$SOCK_B" "$@"; }
# ha_adm a|b ARGS...: ulvsadm against director A or B
ha_adm() { local w=$1; shift; if [ "$w" = a ]; then adm "$@"; else admb "$@"; fi; }

# ha_now: wall-clock seconds with fractions (comparable with the tools' "t")
ha_now() { date +%s.%N; }
# ha_since T0: seconds since T0, two decimals
ha_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b - a}'; }

# ha_router_mac: the router's neighbour entry for the VIP (a MAC or nothing)
ha_router_mac() {
  ip netns exec "$NS_ROUTER" ip neigh show "$VIP" dev "$ROUTER_LAN_IF" \
    | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}'
}
# ha_wait_router_mac MAC SECONDS: until the router reaches the VIP at MAC
ha_wait_router_mac() {
  local mac=$1 t=$2 i
  for i in $(seq $((t * 20))); do [ "$(ha_router_mac)" = "$mac" ] && return 0; sleep 0.05; done
  return 1
}

# ha_require_keepalived: keepalived installed (apt-get when missing)
ha_require_keepalived() {
  command -v keepalived >/dev/null && return 0
  say "installing keepalived (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends keepalived >"$WORK/apt.log" 2>&1 \
    || { apt-get update -qq >>"$WORK/apt.log" 2>&1 && DEBIAN_FRONTEND=noninteractive \
         apt-get install -y -qq --no-install-recommends keepalived >>"$WORK/apt.log" 2>&1; } \
    || fatal "keepalived is not installed and apt-get could not install it: $(tail -n 2 "$WORK/apt.log")"
}

# ha_sync_key: a 32-byte random key in $WORK/sync.key (hex, mode 0600)
ha_sync_key() {
  ( umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/sync.key"; echo >>"$WORK/sync.key" )
}

# ha_configs BASE [on|off]: from the one-director config BASE (bed_config),
# write $WORK/a.yaml and $WORK/b.yaml: `announce: none` on both (keepalived
# or the scenario switches announcing on), B's own control socket, and with
# "on" (the default) a `sync:` section naming the other director as the
# peer, authenticated with $WORK/sync.key.
ha_configs() {
  local base=$1 sync=${2:-on} w ip peer sock
  [ "$sync" = on ] && [ ! -s "$WORK/sync.key" ] && ha_sync_key
  for w in a b; do
    if [ $w = a ]; then ip=$DIR1_IP; peer=$DIR2_IP; sock=$SOCK; else ip=$DIR2_IP; peer=$DIR1_IP; sock=$SOCK_B; fi
    {
      echo "announce: none"
      if [ "$sync" = on ]; then
        echo "sync:"
        echo "  listen: $ip:$HA_SYNC_PORT"
        echo "  peers: [$peer:$HA_SYNC_PORT]"
        echo "  key_file: $WORK/sync.key"
      fi
      sed "s|^control_socket: .*|control_socket: $sock|" "$base"
    } >"$WORK/$w.yaml.tmp" && mv -f "$WORK/$w.yaml.tmp" "$WORK/$w.yaml"
  done
}

# ha_start a|b [CONFIG] [TAG]: --check, then start director A (dir1) or B
# (dir2) with $WORK/a.yaml / b.yaml; log director-a[TAG].log; waits until
# ulvsadm answers (fatal otherwise). PID in HA_A_PID / HA_B_PID.
ha_start() {
  local w=$1 cfg=${2:-$WORK/$1.yaml} tag=${3:-} ns pid i
  if [ "$w" = a ]; then ns=$DIR1_NS; else ns=$DIR2_NS; fi
  ip netns exec "$ns" "$ULVS_BIN/ulvs-director" --check --config "$cfg" >"$WORK/check-$w.log" 2>&1 \
    || { sed 's/^/      /' "$WORK/check-$w.log"; fatal "ulvs-director --check --config $cfg"; }
  start_bg "director-$w$tag" "$ns" env RUST_LOG="${RUST_LOG:-info}" "$ULVS_BIN/ulvs-director" --config "$cfg"
  pid=$BG_PID
  if [ "$w" = a ]; then HA_A_PID=$pid; DIRECTOR_LOG="$WORK/director-a$tag.log"; else HA_B_PID=$pid; fi
  [ -n "$DIRECTOR_PID" ] && kill -0 "$DIRECTOR_PID" 2>/dev/null || DIRECTOR_PID=$pid
  for i in $(seq 150); do
    kill -0 "$pid" 2>/dev/null || fatal "director $w exited at start: $(tail -n 3 "$WORK/director-$w$tag.log")"
    timeout 2 ip netns exec "$ns" "$ULVS_BIN/ulvsadm" --socket "$([ "$w" = a ] && echo "$SOCK" || echo "$SOCK_B")" \
      list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fatal "director $w: ulvsadm list did not answer within 15 s"
}
# ha_kill a|b: SIGKILL director A or B and reap it
ha_kill() {
  local w=$1 pid
  if [ "$w" = a ]; then pid=$HA_A_PID; HA_A_PID=""; else pid=$HA_B_PID; HA_B_PID=""; fi
  [ -n "$pid" ] || return 1
  disown "$pid" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  [ "$DIRECTOR_PID" = "$pid" ] && DIRECTOR_PID=""
  if [ -z "$DIRECTOR_PID" ]; then
    if [ "$w" = a ]; then DIRECTOR_PID=$HA_B_PID; else DIRECTOR_PID=$HA_A_PID; fi
  fi
  ! kill -0 "$pid" 2>/dev/null
}
# ha_stop a|b: SIGTERM, expect exit 0 within 10 s (a check)
ha_stop() {
  local w=$1 pid rc
  if [ "$w" = a ]; then pid=$HA_A_PID; HA_A_PID=""; else pid=$HA_B_PID; HA_B_PID=""; fi
  [ -n "$pid" ] || { fail "ha_stop $w: not running"; return; }
  [ "$DIRECTOR_PID" = "$pid" ] && DIRECTOR_PID=""
  kill -TERM "$pid" 2>/dev/null
  wait_pid "$pid" 10; rc=$?
  [ $rc -eq 124 ] && { kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  check "director $w exited 0 on SIGTERM (status $rc)" test "$rc" -eq 0
}

# ha_stat a|b EXPR: a Python expression over d, `ulvsadm stats --json` of A or B
ha_stat() {
  ha_adm "$1" stats --json >"$WORK/stat-$1.json" 2>/dev/null || { echo "no-answer"; return 1; }
  jget "$WORK/stat-$1.json" "$2"
}
# ha_wait_stat a|b EXPR SECONDS: until EXPR is True; prints the seconds taken
ha_wait_stat() {
  local w=$1 expr=$2 t=$3 t0
  t0=$(ha_now)
  while :; do
    [ "$(ha_stat "$w" "bool($expr)" 2>/dev/null)" = True ] && { ha_since "$t0"; return 0; }
    awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$t" 'BEGIN{exit !(b - a > t)}' && return 1
    sleep 0.1
  done
}

# ------------------------------------------------------------------ keepalived
# keepalived runs scripts only from root-owned, non-writable paths; its
# config and wrappers go to a directory under /run (removed by the trap).
ha_keepalived_dir() {
  HA_KA_DIR=$(mktemp -d /run/ulvs-ka.XXXXXX) || fatal "cannot create a keepalived directory under /run"
  chmod 755 "$HA_KA_DIR"
  trap 'rc=$?; rm -rf "$HA_KA_DIR"; (exit $rc); cleanup' EXIT
}
# ha_keepalived_conf a|b SHIPPED [PRIORITY]: instantiate a shipped keepalived
# config (director/keepalived/*.conf, written for director A = 198.18.0.2,
# peer 198.18.0.3) for director A or B of this bed: ulvsadm through a
# wrapper naming this director's socket, router_id, priority (A 150, B 100
# unless given), unicast source and peer. Writes $HA_KA_DIR/W.conf.
ha_keepalived_conf() {
  local w=$1 shipped=$2 prio=${3:-} sock src peer
  [ -n "$HA_KA_DIR" ] || ha_keepalived_dir
  if [ "$w" = a ]; then sock=$SOCK; src=$DIR1_IP; peer=$DIR2_IP; prio=${prio:-150}
  else sock=$SOCK_B; src=$DIR2_IP; peer=$DIR1_IP; prio=${prio:-100}; fi
  printf '#!/bin/sh\nexec %s --socket %s "$@"\n' "$ULVS_BIN/ulvsadm" "$sock" >"$HA_KA_DIR/adm-$w"
  chmod 755 "$HA_KA_DIR/adm-$w"
  sed -e "s|/usr/local/bin/ulvsadm|$HA_KA_DIR/adm-$w|" -e "s|router_id ulvs-a|router_id ulvs-$w-$TB_PREFIX|" \
    -e "s|priority 150|priority $prio|" -e "s|unicast_src_ip 198.18.0.2|unicast_src_ip $src|" \
    -e "s|^        198.18.0.3$|        $peer|" "$shipped" >"$HA_KA_DIR/$w.conf"
}
# ha_keepalived a|b [TAG]: run keepalived (VRRP only, foreground) in A's or
# B's namespace with $HA_KA_DIR/W.conf, log keepalived-W[TAG].log; PID in
# HA_KA_A_PID / HA_KA_B_PID
ha_keepalived() {
  local w=$1 tag=${2:-} ns
  if [ "$w" = a ]; then ns=$DIR1_NS; else ns=$DIR2_NS; fi
  rm -f "$HA_KA_DIR/$w.pid" "$HA_KA_DIR/$w-vrrp.pid"
  start_bg "keepalived-$w$tag" "$ns" keepalived --dont-fork --log-console --log-detail --vrrp \
    -f "$HA_KA_DIR/$w.conf" --pid "$HA_KA_DIR/$w.pid" --vrrp_pid "$HA_KA_DIR/$w-vrrp.pid"
  if [ "$w" = a ]; then HA_KA_A_PID=$BG_PID; else HA_KA_B_PID=$BG_PID; fi
}
# ha_keepalived_kill a|b: SIGKILL keepalived of A or B, its VRRP child
# first (a host that dies sends no last advertisement)
ha_keepalived_kill() {
  local w=$1 pid child
  if [ "$w" = a ]; then pid=$HA_KA_A_PID; else pid=$HA_KA_B_PID; fi
  child=$(head -n1 "$HA_KA_DIR/$w-vrrp.pid" 2>/dev/null | tr -dc 0-9)
  [ -n "$child" ] && kill -KILL "$child" 2>/dev/null
  disown "$pid" 2>/dev/null
  kill -KILL "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
}
# ha_keepalived_log: the last state changes of both keepalived instances
ha_keepalived_log() {
  grep -h "Entering\|announc\|preempt" "$WORK"/keepalived-*.log 2>/dev/null | tail -n 10 | sed 's/^/      /'
}

# ------------------------------------------------------------------ load
# ha_downloads NAME COUNT SECONDS BYTES: COUNT long downloads at once from
# the client (tools/manyget.py, every byte checked); waits until they all
# have their response headers ($WORK/NAME.ready); PID in $HA_DL_PID
ha_downloads() {
  local name=$1 n=$2 secs=$3 bytes=$4
  start_bg "$name" "$NS_CLIENT" "$PY" "$TOOLS/manyget.py" --host "$VIP" --count "$n" --seconds "$secs" \
    --bytes "$bytes" --spread 2 --timeout 20 --max-seconds $((secs + 60)) --ready-file "$WORK/$name.ready"
  HA_DL_PID=$BG_PID
  wait_file "$WORK/$name.ready" 30 || fatal "$name: the downloads did not get their headers: $(tail -c 300 "$WORK/$name.log")"
  say "$name: $(jget "$WORK/$name.ready" 'd["headers"]') of $n downloads streaming, per server $(jget "$WORK/$name.ready" 'd["per_server"]')"
}
# ha_downloads_finish NAME PID SECONDS: wait for them; summary in $WORK/NAME.json
ha_downloads_finish() { bg_json "$@"; }
# ha_load NAME SECONDS: a steady request load (fresh connections, 20/s,
# generous per-request timeout so a SYN lost during a takeover is retried by
# TCP instead of failing the request) for at most SECONDS; PID in $HA_LOAD_PID
ha_load() {
  local name=$1 secs=$2
  ops_load_start "$name" --rate 20 --concurrency 32 --timeout 20 --max-seconds "$secs" --count $((secs * 20))
  HA_LOAD_PID=$BG_PID
}
# ha_broken_report NAME: one line on the broken downloads of $WORK/NAME.json
ha_broken_report() {
  jget "$WORK/$1.json" '"%d of %d broken; e.g. %s" % (d["broken"], d["count"], d["broken_list"][:3])' 2>/dev/null \
    || echo "(no summary: $(tail -c 300 "$WORK/$1.log"))"
}

# ------------------------------------------------------------------ the pair
# ha_pair_up SHIPPED [ALLOWED_WARNING]: keepalived configs for A and B from
# the shipped file, `keepalived -t` (only ALLOWED_WARNING, a grep pattern,
# may appear), start directors A and B ($WORK/a.yaml, b.yaml), both silent,
# then keepalived on both; A must become master and the router reach the VIP
# at A. Fatal when the pair does not come up.
ha_pair_up() {
  local shipped=$1 allowed=${2:-^$} t=0
  ha_keepalived_conf a "$shipped"
  ha_keepalived_conf b "$shipped"
  keepalived -t -f "$HA_KA_DIR/a.conf" >"$WORK/ka-test.log" 2>&1
  check "keepalived -t accepts $(basename "$shipped") (instantiated for this bed)" \
    test -z "$(grep -v -e "$allowed" "$WORK/ka-test.log")"
  ha_start a
  ha_start b
  check "both directors start silent (announce: none)" test "$(adm announce)/$(admb announce)" = off/off
  ha_keepalived a
  ha_keepalived b
  for t in $(seq 150); do [ "$(adm announce)" = on ] && break; sleep 0.1; done
  check "keepalived made A master: A announces (after $((t / 10)).$((t % 10)) s)" test "$(adm announce)" = on
  check "B stays backup: not announcing" test "$(admb announce)" = off
  [ "$(adm announce)" = on ] || fatal "the pair did not come up"
  wait_vip_http 10 || say "warm-up request through the VIP did not succeed"
  check "the router reaches the VIP at A" test "$(ha_router_mac)" = "$DIR1_MAC"
}

# ha_expect_synced N: A lists at least N established flows and B holds every
# one of them as synced (origin: A's sync address) with the same server
ha_expect_synced() {
  local n=$1
  adm_json "$WORK/flows-a.json" flows || fail "A: ulvsadm flows --json"
  admb flows --json >"$WORK/flows-b.json" 2>"$WORK/adm.err" || fail "B: ulvsadm flows --json: $(cat "$WORK/adm.err")"
  expect "A lists at least the $n downloads as established" "$WORK/flows-a.json" \
    "sum(1 for f in d['flows'] if f['state'] == 'established') >= $n"
  expect "B holds every established flow of A, synced (origin $DIR1_IP:$HA_SYNC_PORT), same server" "$WORK/flows-b.json" \
    "(lambda a, b: len(a) >= $n and all(b.get(k) == v for k, v in a.items()))(
       {(f['client'], f['vip']): f['server'] for f in json.load(open('$WORK/flows-a.json'))['flows'] if f['state'] == 'established'},
       {(f['client'], f['vip']): f['server'] for f in d['flows'] if f.get('origin') == '$DIR1_IP:$HA_SYNC_PORT'})"
}

# ha_takeover: SIGKILL director A; wait (15 s at most) until the router
# reaches the VIP at B; the seconds it took in $HA_TAKEOVER (checks)
ha_takeover() {
  local t0
  t0=$(ha_now)
  ha_kill a || fail "SIGKILL director A"
  ha_wait_router_mac "$DIR2_MAC" 15
  HA_TAKEOVER=$(ha_since "$t0")
  check "after A's director died, keepalived moved the VIP to B in $HA_TAKEOVER s" test "$(ha_router_mac)" = "$DIR2_MAC"
  check "B announces" test "$(admb announce)" = on
  say "takeover (SIGKILL to the router's ARP entry on B): $HA_TAKEOVER s"
}

# ha_verify_traffic DL_NAME N_DL LOAD_NAME MIN_OK: the downloads all complete
# byte-exact and the steady load has no failed request (checks), then one
# HA_RESULT line for the report
ha_verify_traffic() {
  local dl=$1 n=$2 load=$3 min=$4
  ha_downloads_finish "$dl" "$HA_DL_PID" 90
  say "downloads: $(ha_broken_report "$dl"); slowest $(jget "$WORK/$dl.json" 'd["max_elapsed"]') s"
  expect "all $n long downloads completed byte-exact (0 broken)" "$WORK/$dl.json" \
    "d['count'] == $n and d['ok'] == $n and d['broken'] == 0"
  ops_load_finish "$load" "$HA_LOAD_PID" 60
  say "steady load: $(jget "$WORK/$load.json" '"%d ok, %d failed, max latency %.2f s" % (d["ok"], d["failed"], d["max_latency"])')"
  expect "steady load: 0 failed requests (at least $min answered)" "$WORK/$load.json" "d['failed'] == 0 and d['ok'] >= $min"
  echo "HA_RESULT scenario=$SCENARIO sync=${SYNC:-?} takeover_s=${HA_TAKEOVER:-none} broken=$(jget "$WORK/$dl.json" 'd["broken"]' 2>/dev/null) failed_requests=$(jget "$WORK/$load.json" 'd["failed"]' 2>/dev/null) max_latency_s=$(jget "$WORK/$load.json" 'd["max_latency"]' 2>/dev/null)"
}

# ------------------------------------------------------------------ sync
# ha_sync_json a|b FILE: `ulvsadm stats --json` of A or B into FILE
ha_sync_json() { ha_adm "$1" stats --json >"$2" 2>"$WORK/adm.err" && [ -s "$2" ]; }
# ha_sync_ctr FILE NAME: sync counter NAME of a `stats --json` FILE (in its
# "sync" object, or under "sync"/"rejected" for the rejection reasons)
HA_SYNC_PY='import json,sys
def ctr(f, n):
    s = json.load(open(f))["sync"]
    return s[n] if n in s else s["rejected"].get(n, 0)
'
ha_sync_ctr() { "$PY" -c "$HA_SYNC_PY"'
print(ctr(sys.argv[1], sys.argv[2]))' "$1" "$2"; }
# ha_sync_delta BEFORE AFTER NAME: how much sync counter NAME moved
ha_sync_delta() { "$PY" -c "$HA_SYNC_PY"'
print(ctr(sys.argv[2], sys.argv[3]) - ctr(sys.argv[1], sys.argv[3]))' "$1" "$2" "$3"; }
# HA_BULK_DONE: a Python expression over d (stats --json): every peer's
# bulk transfer to this director is complete
HA_BULK_DONE='all(p["bulk"] == "complete" for p in d["sync"]["peers"])'
