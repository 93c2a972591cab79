# shellcheck shell=bash
# lib.sh: helpers for the ulvs end-to-end scenarios.  Source it from a scenario:
#
#   . "$(dirname "$0")/../lib.sh"
#   scenario_begin --servers 3 --mode dr     # test bed up, cleanup trap set
#                                            # (--ipv6: dual-stack, see "IPv6" below)
#   ...                                      # start servers, director, load
#   scenario_end                             # prints the verdict, exits 0/1
#
# Every scenario gets its own test bed (prefix $ULVS_PREFIX, else a unique one),
# its own work directory ($WORK: configs, logs, JSON results, the control
# socket), and a trap that always stops what it started and tears the bed down.
#
# Environment: ULVS_BIN (default <repo>/target/release), ULVS_PREFIX,
# RUST_LOG (default info), KEEP_WORK=1 keeps $WORK even on success,
# ULVS_IO (auto|af_xdp|af_packet), when set, becomes "io:" in the configs;
# ULVS_DIRECTOR_WRAP, when set, is a command the director runs under (split on
# spaces), e.g. "setpriv --bounding-set -all,+net_admin,... --" to run the
# scenarios with the capabilities of the systemd unit only.
# ULVS_XDP_FAST_PATH=1 (a test knob the director reads: the XDP fast path on
# under io af_xdp/auto whatever the config says) also prepares every bed the
# way xdp-fast-path does, so the fast path carries frames on veth: the
# client sends full checksums (tx offload off) and the directors' switch
# ports run NAPI (GRO on); ULVS_FAST_BED=0 leaves the bed as it is.

set -u
set -o pipefail

TB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$TB_DIR/.." && pwd)
TOOLS="$TB_DIR/tools"
TESTBED="$TB_DIR/testbed"
ULVS_BIN=${ULVS_BIN:-$REPO_DIR/target/release}
PY=${PYTHON:-python3}
SCENARIO=${SCENARIO:-$(basename "$0")}
PREFIX=${ULVS_PREFIX:-s$$}
PASSES=0
FAILS=0
DIRECTOR_PID=""
DIRECTOR_LOG=""
BG_PIDS=()
WORK=$(mktemp -d "/tmp/ulvs-${SCENARIO}.XXXXXX") || { echo "FAIL: cannot create a work directory"; exit 1; }
SOCK="$WORK/ctl.sock"

say() { echo "[$SCENARIO] $*"; }
pass() { PASSES=$((PASSES + 1)); echo "PASS: $*"; }
fail() { FAILS=$((FAILS + 1)); echo "FAIL: $*"; }
# check DESC CMD...: PASS when CMD succeeds
check() { local d=$1; shift; if "$@"; then pass "$d"; else fail "$d"; fi; }
# fatal DESC: FAIL and stop the scenario here (cleanup still runs)
fatal() { fail "$*"; scenario_end; }

# ------------------------------------------------------------------ JSON
# jget FILE EXPR: print a Python expression over d (the parsed JSON in FILE)
jget() { "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"; }
# expect DESC FILE EXPR: PASS when the Python expression over d is true; on
# failure shows the file's content (shortened)
expect() {
  local desc=$1 file=$2 expr=$3
  if [ -s "$file" ] && "$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if eval(sys.argv[2]) else 1)' "$file" "$expr" 2>"$WORK/expect.err"; then
    pass "$desc"
  else
    fail "$desc  [$expr]"
    echo "      $(head -c 600 "$file" 2>/dev/null || echo "(no $file)")"
    [ -s "$WORK/expect.err" ] && sed 's/^/      /' "$WORK/expect.err" | tail -n 3
  fi
}
# expect2 DESC FILE_BEFORE FILE_AFTER EXPR: as expect, with a (before) and b (after)
expect2() {
  local desc=$1 f1=$2 f2=$3 expr=$4
  if "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); sys.exit(0 if eval(sys.argv[3]) else 1)' "$f1" "$f2" "$expr" 2>"$WORK/expect.err"; then
    pass "$desc"
  else
    fail "$desc  [$expr]"
    echo "      before: $(head -c 400 "$f1" 2>/dev/null)"
    echo "      after:  $(head -c 400 "$f2" 2>/dev/null)"
    [ -s "$WORK/expect.err" ] && sed 's/^/      /' "$WORK/expect.err" | tail -n 3
  fi
}

# ------------------------------------------------------------------ bed
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$DIRECTOR_PID" ] && kill -0 "$DIRECTOR_PID" 2>/dev/null; then
    kill -TERM "$DIRECTOR_PID" 2>/dev/null
    local i; for i in $(seq 50); do kill -0 "$DIRECTOR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DIRECTOR_PID" 2>/dev/null && kill -KILL "$DIRECTOR_PID" 2>/dev/null
  fi
  local p; for p in "${BG_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  "$TESTBED" down --prefix "$PREFIX" >/dev/null 2>&1
  if [ "$FAILS" -gt 0 ] || [ "$rc" -ne 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    say "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}

# scenario_begin [testbed up options]: bring a fresh bed up and source its env
scenario_begin() {
  trap cleanup EXIT
  trap 'echo "[$SCENARIO] interrupted"; exit 130' INT TERM
  [ "$(id -u)" -eq 0 ] || { fail "scenarios need root"; exit 1; }
  say "test bed prefix $PREFIX, work $WORK"
  if ! "$TESTBED" up --prefix "$PREFIX" "$@" >"$WORK/testbed.log" 2>&1; then
    cat "$WORK/testbed.log"
    fail "testbed up $*"
    exit 1
  fi
  # shellcheck disable=SC1090,SC1091
  . "/run/ulvs-testbed/$PREFIX/env"
  if [ "${ULVS_XDP_FAST_PATH:-}" = 1 ] && [ "${ULVS_FAST_BED:-1}" != 0 ]; then
    bed_for_fast_path || { fail "preparing the bed for ULVS_XDP_FAST_PATH=1"; exit 1; }
  fi
}

# bed_for_fast_path: what the XDP fast path needs to carry frames on veth
# (see xdp-fast-path): full checksums from the client (a veth peer's
# offload leaves them partial, and the program leaves partial ones to the
# workers), NAPI on the directors' switch ports (the program's redirect to
# its own interface reaches only a peer with NAPI).
bed_for_fast_path() {
  local k
  ip netns exec "$NS_CLIENT" ethtool -K "$CLIENT_IF" tx off >/dev/null || return 1
  for k in $(seq "$N_DIRECTORS"); do
    ip netns exec "$NS_SWITCH" ethtool -K "p-dir$k" gro on >/dev/null || return 1
  done
}

# scenario_end: the verdict, then the cleanup trap
scenario_end() {
  if [ "$FAILS" -eq 0 ] && [ "$PASSES" -gt 0 ]; then
    say "scenario PASSED ($PASSES checks)"
    exit 0
  fi
  say "scenario FAILED ($FAILS of $((PASSES + FAILS)) checks failed)"
  if [ -n "$DIRECTOR_LOG" ] && [ -s "$DIRECTOR_LOG" ]; then
    say "last lines of the director log $DIRECTOR_LOG:"
    tail -n 25 "$DIRECTOR_LOG" | sed 's/^/      /'
  fi
  exit 1
}

# ------------------------------------------------------------------ processes
# start_bg NAME NS CMD...: run CMD in namespace NS in the background, output to
# $WORK/NAME.log, PID in $BG_PID and recorded for testbed down
start_bg() {
  local name=$1 ns=$2; shift 2
  ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
  echo "$BG_PID" >"$TB_PIDS/$name.pid"
}
# wait_file FILE SECONDS: true once FILE exists
wait_file() {
  local f=$1 t=$2 i
  for i in $(seq $((t * 20))); do [ -e "$f" ] && return 0; sleep 0.05; done
  [ -e "$f" ]
}
# wait_pid PID SECONDS: wait for a background child; its exit status is returned
# (124 when it is still running after SECONDS; it is then left running)
wait_pid() {
  local pid=$1 t=$2 i
  for i in $(seq $((t * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && return 124
  wait "$pid"
}

# ------------------------------------------------------------------ real servers
# One set of helpers for the servers of the bed; the ops_* and mode_* names
# further down are kept as thin wrappers for the scenarios that use them.

# rs_ip K / rs_ns K: address / namespace of real server K
rs_ip() { eval echo "\$RS${1}_IP"; }
rs_ns() { eval echo "\$RS${1}_NS"; }
# rs_addr K [RS_PORT]: server K as the config (and ulvsadm) names it
rs_addr() { if [ -n "${2:-}" ]; then echo "$(rs_ip "$1"):$2"; else rs_ip "$1"; fi; }
# rs_k ADDRESS|NAME: K of the real server with this address (IPv4 or IPv6,
# with or without a port) or name rsK
rs_k() {
  local k a=$1
  case "$a" in rs[0-9]*) echo "${a#rs}"; return 0 ;; \[*) a=${a#[}; a=${a%%]*} ;; esac
  for k in $(seq "$N_SERVERS"); do
    [ "$(rs_ip "$k")" = "$a" ] || [ "$(rs_ip "$k")" = "${a%:*}" ] \
      || { [ "${TB_IPV6:-0}" = 1 ] && [ "$(rs_ip6 "$k")" = "$a" ]; } && { echo "$k"; return 0; }
  done
  return 1
}

# ------------------------------------------------------------------ IPv6
# A dual-stack bed (scenario_begin --ipv6, or an IPv6 --vip) has, besides all
# of the IPv4 bed: $VIP6 (2001:db8:100::1 unless given), $VIPS6, $CLIENT_IP6,
# $ROUTER_IP6, $ROUTER_LAN_IP6, $DIRk_IP6, $RSk_IP6, $RS_IPS6, $DIR_IPS6 and
# TB_IPV6=1.  The servers' httpd.py and udpecho.py then listen on one
# dual-stack socket each, so one server answers both VIPs.

# rs_ip6 K: IPv6 address of real server K
rs_ip6() { eval echo "\$RS${1}_IP6"; }
# rs_addr6 K [RS_PORT]: server K's IPv6 address as the config names it
# ([2001:db8:2::11]:8080 with a port)
rs_addr6() { if [ -n "${2:-}" ]; then echo "[$(rs_ip6 "$1")]:$2"; else rs_ip6 "$1"; fi; }
# url_host ADDR: ADDR as the host of a URL ([...] around an IPv6 address)
url_host() { case "$1" in *:*) echo "[$1]" ;; *) echo "$1" ;; esac; }
# wait_vip6_http SECONDS: wait_http on http://[$VIP6]/
wait_vip6_http() { wait_http "http://[$VIP6]/" "${1:-10}"; }
# wait_udp ADDR PORT SECONDS: until one datagram to ADDR:PORT is echoed
wait_udp() {
  local addr=$1 port=$2 t=${3:-10}
  for _ in $(seq "$t"); do
    director_alive || fatal "ulvs-director is no longer running"
    ip netns exec "$NS_CLIENT" "$PY" "$TOOLS/udpload.py" --addr "$addr" --port "$port" --count 1 --timeout 1 \
      >"$WORK/warmup.json" 2>&1
    [ "$(jget "$WORK/warmup.json" 'd["ok"]' 2>/dev/null)" = 1 ] && return 0
  done
  return 1
}
# rs_bind: what the servers' tools listen on (:: is both families)
rs_bind() { if [ "${TB_IPV6:-0}" = 1 ]; then echo "::"; else echo "0.0.0.0"; fi; }

# rs_httpd_start K PORT READY [LOG]: start tools/httpd.py --name rsK on
# server K, its PID (once it listens) in $WORK/READY.ready, output in
# $WORK/LOG.log (default READY); does not wait
rs_httpd_start() {
  local k=$1 port=$2 ready=$3 log=${4:-$3}
  rm -f "$WORK/$ready.ready"
  start_bg "$log" "$(rs_ns "$k")" "$PY" "$TOOLS/httpd.py" --name "rs$k" --port "$port" \
    --bind "$(rs_bind)" --pidfile "$WORK/$ready.ready"
}
# rs_httpd_all PORT [TAG]: httpd on every server, named httpdTAG-rsK, and
# wait until all listen (fatal otherwise)
rs_httpd_all() {
  local port=$1 tag=${2:-} k
  for k in $(seq "$N_SERVERS"); do rs_httpd_start "$k" "$port" "httpd$tag-rs$k"; done
  for k in $(seq "$N_SERVERS"); do
    wait_file "$WORK/httpd$tag-rs$k.ready" 10 \
      || fatal "httpd on rs$k:$port did not start: $(cat "$WORK/httpd$tag-rs$k.log")"
  done
}
# rs_httpd_pid K [TAG]: PID of server K's running httpd (httpdTAG-rsK)
rs_httpd_pid() { head -n1 "$WORK/httpd${2:-}-rs$1.ready" 2>/dev/null | tr -dc 0-9; }
# rs_httpd_kill K [SIGNAL] [TAG]: stop server K's httpd by its PID (default
# SIGKILL) and wait until it is gone; false when there is none
rs_httpd_kill() {
  local k=$1 sig=${2:-KILL} tag=${3:-} pid
  pid=$(rs_httpd_pid "$k" "$tag")
  [ -n "$pid" ] || return 1
  disown "$pid" 2>/dev/null   # our job? then no "Killed" notice from bash
  kill "-$sig" "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  { wait "$pid"; } 2>/dev/null
  rm -f "$WORK/httpd$tag-rs$k.ready"
  ! kill -0 "$pid" 2>/dev/null
}
# start_httpd_all [PORT]: httpd (httpd-rsK) on every real server
start_httpd_all() { rs_httpd_all "${1:-80}"; }
# start_udpecho_all [PORT]: tools/udpecho.py --name rsK on every real server
start_udpecho_all() {
  local port=${1:-53} k
  for k in $(seq "$N_SERVERS"); do
    start_bg "udpecho-rs$k" "$(rs_ns "$k")" "$PY" "$TOOLS/udpecho.py" --name "rs$k" --port "$port" \
      --bind "$(rs_bind)" --pidfile "$WORK/udpecho-rs$k.ready"
  done
  for k in $(seq "$N_SERVERS"); do
    wait_file "$WORK/udpecho-rs$k.ready" 10 || fatal "udpecho on rs$k did not start: $(cat "$WORK/udpecho-rs$k.log")"
  done
}

# ------------------------------------------------------------------ director
# require_director: both binaries exist and ulvs-director --help works
require_director() {
  local b
  for b in ulvs-director ulvsadm; do
    [ -x "$ULVS_BIN/$b" ] || fatal "$ULVS_BIN/$b missing (run cargo build --release, or set ULVS_BIN)"
  done
  "$ULVS_BIN/ulvs-director" --help >/dev/null 2>&1 || fatal "$ULVS_BIN/ulvs-director --help fails"
}

# adm ARGS...: ulvsadm against this scenario's director
adm() { ip netns exec "$DIR1_NS" "$ULVS_BIN/ulvsadm" --socket "$SOCK" "$@"; }
# adm_json FILE VERB: `ulvsadm VERB --json` into FILE; false when it fails
adm_json() {
  local f=$1; shift
  adm "$@" --json >"$f" 2>"$WORK/adm.err" || { echo "      ulvsadm $* --json: $(head -c 300 "$WORK/adm.err")"; return 1; }
  "$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$f" 2>/dev/null \
    || { echo "      ulvsadm $* --json printed no JSON: $(head -c 300 "$f")"; return 1; }
}

# bed_config FILE [--mode dr|nat|tun] [--proto tcp|udp] [--port N]
#   [--name S] [--rs-port P] [--scheduler S] [--health FLOW] [--timeouts FLOW]
#   [--weights "W1 W2 ..."] [--servers "K1 K2 ..."] [--top LINE]...
#   [--server-line K LINE]: the one config generator of the scenarios: a
#   one-service config (default: dr, tcp, port 80, name web) over the
#   servers (all by default, weight 1).  --rs-port (nat) names the servers
#   IP:P; FLOW is a YAML flow mapping, e.g. "{kind: tcp, interval_ms: 500}";
#   --weights gives server K the K-th weight; --top adds a top-level line
#   (metrics_listen: ..., on_server_down: ...); --server-line adds a line
#   under server K's entry (e.g. a deliberately unknown field).
#   --family 6 (dual-stack bed): VIP $VIP6 and the servers' IPv6 addresses;
#   --vip V another VIP; --append adds the service to FILE's services
#   (written by an earlier bed_config) instead of writing a new file.
#   $ULVS_WORKERS and $ULVS_IO, when set, become "workers:" and "io:".
bed_config() {
  local f=$1; shift
  local mode=dr proto=tcp port=80 name=web rsport="" health="" timeouts="" weights="" servers="" sched=maglev
  local tops=() sl_k="" sl_line="" k t w family=4 vip="" append=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --mode) mode=$2; shift ;;
      --proto) proto=$2; shift ;;
      --port) port=$2; shift ;;
      --name|--service) name=$2; shift ;;
      --rs-port) rsport=$2; shift ;;
      --health) health=$2; shift ;;
      --timeouts) timeouts=$2; shift ;;
      --weights) weights=$2; shift ;;
      --servers) servers=$2; shift ;;
      --scheduler) sched=$2; shift ;;
      --top) tops+=("$2"); shift ;;
      --server-line) sl_k=$2; sl_line=$3; shift 2 ;;
      --family) family=$2; shift ;;
      --vip) vip=$2; shift ;;
      --append) append=1 ;;
      *) echo "bed_config: unknown option $1" >&2; return 2 ;;
    esac
    shift
  done
  [ -n "$servers" ] || servers=$(seq -s ' ' "$N_SERVERS")
  case "$family" in
    4) [ -n "$vip" ] || vip=$VIP ;;
    6) [ "${TB_IPV6:-0}" = 1 ] || { echo "bed_config: --family 6 needs a dual-stack bed (--ipv6)" >&2; return 2; }
       [ -n "$vip" ] || vip=$VIP6 ;;
    *) echo "bed_config: --family 4 or 6" >&2; return 2 ;;
  esac
  if [ "$append" = 1 ]; then
    [ -s "$f" ] || { echo "bed_config --append: $f has no config yet" >&2; return 2; }
    cp "$f" "$f.tmp" || return 1
  else
    : >"$f.tmp" || return 1
  fi
  {
    [ "$append" = 1 ] || {
    echo "interface: eth0"
    echo "control_socket: $SOCK"
    [ -n "${ULVS_WORKERS:-}" ] && echo "workers: $ULVS_WORKERS"
    [ -n "${ULVS_IO:-}" ] && echo "io: $ULVS_IO"
    [ -n "$timeouts" ] && echo "timeouts: $timeouts"
    for t in "${tops[@]}"; do echo "$t"; done
    echo "services:"
    }
    echo "  - name: $name"
    echo "    vip: $vip"
    echo "    port: $port"
    echo "    protocol: $proto"
    echo "    mode: $mode"
    echo "    scheduler: $sched"
    [ -n "$health" ] && echo "    health: $health"
    echo "    real_servers:"
    for k in $servers; do
      w=1
      [ -n "$weights" ] && w=$(echo "$weights" | awk -v k="$k" '{print $k}')
      # quoted: YAML would read an unquoted [2001:db8:2::11]:8080 as a list
      if [ "$family" = 6 ]; then echo "      - address: \"$(rs_addr6 "$k" "$rsport")\""
      else echo "      - address: $(rs_addr "$k" "$rsport")"; fi
      echo "        weight: ${w:-1}"
      if [ "$k" = "$sl_k" ]; then echo "        $sl_line"; fi
    done
    true
  } >>"$f.tmp" && mv -f "$f.tmp" "$f"
}
# dr_config FILE PROTO PORT [SERVICE_NAME]: a one-service dr config over every server
dr_config() { bed_config "$1" --proto "$2" --port "$3" --name "${4:-web}"; }

# director_start CONFIG [SECONDS]: --check the config, start ulvs-director in
# dir1 and wait until `ulvsadm list` answers
director_start() {
  local cfg=$1 t=${2:-15} i
  DIRECTOR_LOG="$WORK/director.log"
  if ! ip netns exec "$DIR1_NS" "$ULVS_BIN/ulvs-director" --check --config "$cfg" >"$WORK/check.log" 2>&1; then
    sed 's/^/      /' "$WORK/check.log"
    fatal "ulvs-director --check --config $cfg"
  fi
  # shellcheck disable=SC2086
  RUST_LOG=${RUST_LOG:-info} ip netns exec "$DIR1_NS" ${ULVS_DIRECTOR_WRAP:-} "$ULVS_BIN/ulvs-director" --config "$cfg" \
    >"$DIRECTOR_LOG" 2>&1 </dev/null &
  DIRECTOR_PID=$!
  echo "$DIRECTOR_PID" >"$TB_PIDS/director.pid"
  for i in $(seq $((t * 10))); do
    if ! kill -0 "$DIRECTOR_PID" 2>/dev/null; then
      wait "$DIRECTOR_PID"; local rc=$?
      DIRECTOR_PID=""
      fatal "ulvs-director exited at start (status $rc)"
    fi
    # each attempt bounded: a connection made while the daemon is still
    # starting must not stall the whole wait
    timeout 2 ip netns exec "$DIR1_NS" "$ULVS_BIN/ulvsadm" --socket "$SOCK" list >/dev/null 2>&1 && { pass "director started (pid $DIRECTOR_PID) and ulvsadm list answers"; return 0; }
    sleep 0.1
  done
  fatal "ulvsadm list did not answer within ${t}s"
}
director_alive() { [ -n "$DIRECTOR_PID" ] && kill -0 "$DIRECTOR_PID" 2>/dev/null; }
# director_stop: SIGTERM, wait up to 10 s, expect exit status 0
director_stop() {
  [ -n "$DIRECTOR_PID" ] || { fail "director_stop: no director running"; return; }
  kill -TERM "$DIRECTOR_PID" 2>/dev/null
  wait_pid "$DIRECTOR_PID" 10; local rc=$?
  if [ $rc -eq 124 ]; then
    fail "director did not exit within 10s of SIGTERM"
    kill -KILL "$DIRECTOR_PID" 2>/dev/null; wait "$DIRECTOR_PID" 2>/dev/null
  elif [ $rc -eq 0 ]; then
    pass "director exited 0 on SIGTERM"
  else
    fail "director exited with status $rc on SIGTERM"
  fi
  DIRECTOR_PID=""
}

# wait_http URL SECONDS: until one GET of URL from the client succeeds (ARP
# settled, server MACs learned); not a check by itself
wait_http() {
  local url=$1 t=${2:-10}
  for _ in $(seq "$t"); do
    director_alive || fatal "ulvs-director is no longer running"
    ip netns exec "$NS_CLIENT" "$PY" "$TOOLS/httpload.py" --url "$url" --count 1 --timeout 1 \
      --max-seconds 2 >"$WORK/warmup.json" 2>&1
    [ "$(jget "$WORK/warmup.json" 'd["ok"]' 2>/dev/null)" = 1 ] && return 0
  done
  return 1
}
# wait_vip_http SECONDS: wait_http on http://$VIP/
wait_vip_http() { wait_http "http://$VIP/" "${1:-10}"; }

# srv_eval LIST_JSON ADDRESS EXPR: a Python expression over r, the real server
# ADDRESS of `ulvsadm list --json` (first service that has it)
srv_eval() {
  "$PY" -c 'import json,sys
d=json.load(open(sys.argv[1]))
r=[r for s in d["services"] for r in s["real_servers"] if r["address"]==sys.argv[2]][0]
print(eval(sys.argv[3]))' "$1" "$2" "$3"
}
# wait_srv ADDRESS EXPR SECONDS: poll `ulvsadm list --json` (every 0.1 s)
# until EXPR over r (that server) is true; prints the seconds it took and
# leaves the last listing in $WORK/wait.json; false on timeout
wait_srv() {
  local addr=$1 expr=$2 t=$3 t0
  t0=$(date +%s.%N)
  while :; do
    if adm list --json >"$WORK/wait.json" 2>/dev/null \
        && [ "$(srv_eval "$WORK/wait.json" "$addr" "bool($expr)" 2>/dev/null)" = True ]; then
      awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b - a}'
      return 0
    fi
    awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$t" 'BEGIN{exit !(b - a > t)}' && return 1
    sleep 0.1
  done
}
# bg_json NAME PID SECONDS: wait for a background tool (SIGTERM after
# SECONDS), then its last JSON line from $WORK/NAME.log into $WORK/NAME.json
bg_json() {
  local name=$1 pid=$2 t=$3
  wait_pid "$pid" "$t"
  if [ $? -eq 124 ]; then kill -TERM "$pid" 2>/dev/null; wait_pid "$pid" 15; fi
  grep '^{' "$WORK/$name.log" | tail -n1 >"$WORK/$name.json"
}

# ====================================================================== ops-*
# Helpers of the operations scenarios (ops-health-kill, ops-syn-second-chance,
# ops-drain, ops-weights, ops-reload, ops-metrics, ops-rolling-upgrade).  All
# names start with ops_ so they cannot clash with other helpers.

# ops_now: wall-clock seconds with fractions (comparable with tools/loadlog.py)
ops_now() { date +%s.%N; }
# ops_rs_ip, ops_rs_ns, ops_rs_k: rs_ip, rs_ns, rs_k
ops_rs_ip() { rs_ip "$@"; }
ops_rs_ns() { rs_ns "$@"; }
ops_rs_k() { rs_k "$@"; }

# ops_config FILE [bed_config options]: a one-service tcp/80 dr config
ops_config() { bed_config "$@"; }

# ops_httpd_start K [TAG]: (re)start httpd on server K (log httpd-rsK-TAG);
# waits until it listens.  Its PID is in $WORK/httpd-rsK.ready.
ops_httpd_start() {
  local k=$1 tag=${2:-}
  rs_httpd_start "$k" 80 "httpd-rs$k" "httpd-rs$k${tag:+-$tag}"
  wait_file "$WORK/httpd-rs$k.ready" 10 || { fail "httpd on rs$k did not start"; return 1; }
}
# ops_httpd_pid K: PID of the running httpd of server K
ops_httpd_pid() { rs_httpd_pid "$1"; }
# ops_httpd_kill K [SIGNAL]: rs_httpd_kill, a FAIL when there is no httpd
ops_httpd_kill() {
  [ -n "$(rs_httpd_pid "$1")" ] || { fail "no httpd PID for rs$1"; return 1; }
  rs_httpd_kill "$1" "${2:-KILL}"
}

# ops_srv, ops_wait_srv: srv_eval, wait_srv
ops_srv() { srv_eval "$@"; }
ops_wait_srv() { wait_srv "$@"; }

# ops_load_start NAME [loadlog.py args...]: continuous fresh-connection load
# from the client against http://$VIP/ (tools/loadlog.py), per-request log in
# $WORK/NAME.jsonl; its PID in $BG_PID
ops_load_start() {
  local name=$1; shift
  start_bg "$name" "$NS_CLIENT" "$PY" "$TOOLS/loadlog.py" --url "http://$VIP/" --log "$WORK/$name.jsonl" "$@"
}
# ops_load_finish NAME PID SECONDS: bg_json (its summary into $WORK/NAME.json)
ops_load_finish() { bg_json "$@"; }
# ops_reqs JSONL EXPR: a Python expression over L, the list of per-request
# records of tools/loadlog.py; e.g. ops_reqs f 'sum(1 for x in L if x["ok"])'
ops_reqs() {
  "$PY" -c 'import json,sys
L=[json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(eval(sys.argv[2]))' "$1" "$2"
}
# ops_expect_reqs DESC JSONL EXPR: PASS when EXPR over L is true
ops_expect_reqs() {
  local desc=$1 f=$2 expr=$3 v
  v=$(ops_reqs "$f" "bool($expr)" 2>"$WORK/expect.err")
  if [ "$v" = True ]; then pass "$desc"; else
    fail "$desc  [$expr]"
    [ -s "$WORK/expect.err" ] && sed 's/^/      /' "$WORK/expect.err" | tail -n 3
  fi
}
# ops_adm_capture NAME ARGS...: run ulvsadm ARGS, stdout/stderr/status into
# $WORK/NAME.out, .err, .rc; returns its status
ops_adm_capture() {
  local name=$1 rc; shift
  adm "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"; rc=$?
  echo "$rc" >"$WORK/$name.rc"
  return "$rc"
}
# ====================================================================== end ops-*

# ====================================================================== modes: nat-*, tun-*, icmp-*, frag-*, allport-*
# Helpers of the nat/tun/icmp/frag/allport scenarios (self-contained; prefix mode_).

# mode_rs_ip, mode_rs_ns, mode_rs_addr: rs_ip, rs_ns, rs_addr
mode_rs_ip() { rs_ip "$@"; }
mode_rs_ns() { rs_ns "$@"; }
mode_rs_addr() { rs_addr "$@"; }

# mode_config FILE MODE PROTO PORT [bed_config options]
mode_config() {
  local f=$1 mode=$2 proto=$3 port=$4; shift 4
  bed_config "$f" --mode "$mode" --proto "$proto" --port "$port" "$@"
}

# mode_httpd_all PORT [TAG]: rs_httpd_all
mode_httpd_all() { rs_httpd_all "$@"; }
# mode_httpd_kill K [TAG]: SIGKILL server K's httpd and wait until gone
mode_httpd_kill() { rs_httpd_kill "$1" KILL "${2:-}"; }

# mode_wait_http URL SECONDS: wait_http
mode_wait_http() { wait_http "$@"; }
# mode_wait_udp PORT SECONDS: until one datagram to VIP:PORT is echoed
mode_wait_udp() {
  local port=$1 t=${2:-10}
  for _ in $(seq "$t"); do
    director_alive || fatal "ulvs-director is no longer running"
    ip netns exec "$NS_CLIENT" "$PY" "$TOOLS/udpload.py" --addr "$VIP" --port "$port" --count 1 --timeout 1 \
      >"$WORK/warmup.json" 2>&1
    [ "$(jget "$WORK/warmup.json" 'd["ok"]' 2>/dev/null)" = 1 ] && return 0
  done
  return 1
}

# mode_stats FILE: `ulvsadm stats --json` into FILE (FAIL when it fails)
mode_stats() { adm_json "$1" stats || { fail "ulvsadm stats --json"; return 1; }; }
# mode_list FILE: `ulvsadm list --json` into FILE (FAIL when it fails)
mode_list() { adm_json "$1" list || { fail "ulvsadm list --json"; return 1; }; }

# mode_srv_expect DESC LIST_JSON ADDRESS EXPR: PASS when the Python
# expression over r (server ADDRESS in `ulvsadm list --json`) is true
mode_srv_expect() {
  local desc=$1 f=$2 addr=$3 expr=$4
  expect "$desc" "$f" "(lambda r: r is not None and bool($expr))(next((r for s in d['services'] \
for r in s['real_servers'] if r['address'] == '$addr'), None))"
}
# mode_wait_srv ADDRESS EXPR SECONDS: wait_srv, quietly
mode_wait_srv() { wait_srv "$@" >/dev/null; }

# mode_bg_ready NAME NS SECONDS CMD...: start_bg, then wait for the file
# $WORK/NAME.ready (pass it to CMD yourself); PID in $BG_PID
mode_bg_ready() {
  local name=$1 ns=$2 t=$3; shift 3
  start_bg "$name" "$ns" "$@"
  wait_file "$WORK/$name.ready" "$t" || fatal "$name did not get ready: $(head -c 300 "$WORK/$name.log")"
}
# mode_bg_json NAME PID SECONDS: bg_json
mode_bg_json() { bg_json "$@"; }
# mode_sniff NAME NS IFACE SECONDS [sniffx.py args...]: tools/sniffx.py in the
# background; waits until it captures; PID in $BG_PID
mode_sniff() {
  local name=$1 ns=$2 ifc=$3 t=$4; shift 4
  mode_bg_ready "$name" "$ns" 5 "$PY" "$TOOLS/sniffx.py" --iface "$ifc" --seconds "$t" \
    --ready-file "$WORK/$name.ready" "$@"
}
# mode_slowget NAME SECONDS BYTES [PORT]: a slow download from the client
# (tools/slowget.py) through VIP:PORT; waits for its response headers, so
# $WORK/NAME.info names the flow ({"local_port", "server"}); PID in $BG_PID
mode_slowget() {
  local name=$1 secs=$2 bytes=$3 port=${4:-80}
  start_bg "$name" "$NS_CLIENT" "$PY" "$TOOLS/slowget.py" --host "$VIP" --port "$port" --seconds "$secs" \
    --bytes "$bytes" --info-file "$WORK/$name.info"
  wait_file "$WORK/$name.info" 10 || { fail "slow download $name got no response headers: $(head -c 300 "$WORK/$name.log")"; return 1; }
}
# mode_delta BEFORE AFTER EXPR: print a Python expression over a and b
# (two JSON files), e.g. mode_delta s0 s1 'b["forwarded"] - a["forwarded"]'
mode_delta() {
  "$PY" -c 'import json,sys; a=json.load(open(sys.argv[1])); b=json.load(open(sys.argv[2])); print(eval(sys.argv[3]))' "$1" "$2" "$3"
}
# ====================================================================== end modes

# ====================================================================== ecmp-*
# Helpers of the scale-out scenarios (ecmp-*): N directors with `announce:
# route`, each next to BIRD 2, and BIRD 2 on the router merging their BGP
# routes into one ECMP route.  The BIRD configs are director/bird/*.conf with
# this bed's addresses; each director K has its own control socket
# ($WORK/dirK.sock), config ($WORK/dirK.yaml) and log ($WORK/directorK.log).
# Everything they start is in BG_PIDS (stopped by the cleanup trap).

ECMP_TABLE=4096
ECMP_PIDS=()   # index K: PID of director K's ulvs-director
ECMP_OPTS=()   # the bed_config options of ecmp_up, for ecmp_join
ECMP_SYNC=0    # 1: each director's config gets flow sync with every other director of the bed

# ecmp_require: bird and birdc exist (Debian package bird2)
ecmp_require() {
  command -v bird >/dev/null && command -v birdc >/dev/null \
    || fatal "bird/birdc missing (apt-get install bird2; .ci/run installs it)"
}
# ecmp_birdc WHO ARGS...: birdc of the router (WHO=router) or of director K
ecmp_birdc() {
  local who=$1; shift
  if [ "$who" = router ]; then ip netns exec "$NS_ROUTER" birdc -s "$WORK/bird-router.ctl" "$@"
  else ip netns exec "$(eval echo "\$DIR${who}_NS")" birdc -s "$WORK/bird-dir$who.ctl" "$@"; fi
}
# ecmp_bird_conf SRC DST [SED ARGS...]: copy a shipped BIRD config, logging
# to stderr (bird -f keeps it in the foreground; its log is ours)
ecmp_bird_conf() {
  local src=$1 dst=$2; shift 2
  sed -e 's|^log syslog all;|log stderr all;|' "$@" "$REPO_DIR/director/bird/$src" >"$dst"
}
# ecmp_router_up: the router's Linux settings (fib_multipath_hash_policy=1)
# and BIRD with director/bird/router.conf; waits until it answers
ecmp_router_up() {
  ip netns exec "$NS_ROUTER" sysctl -qw net.ipv4.fib_multipath_hash_policy=1 \
    || fatal "cannot set fib_multipath_hash_policy in $NS_ROUTER"
  ecmp_bird_conf router.conf "$WORK/bird-router.conf"
  start_bg bird-router "$NS_ROUTER" bird -f -c "$WORK/bird-router.conf" -s "$WORK/bird-router.ctl"
  for _ in $(seq 50); do ecmp_birdc router show status >/dev/null 2>&1 && return 0; sleep 0.1; done
  fatal "BIRD on the router did not start: $(tail -n 5 "$WORK/bird-router.log")"
}
# ecmp_bird_start K: BIRD with director/bird/director.conf on director K
ecmp_bird_start() {
  local k=$1 ip ns
  ip=$(eval echo "\$DIR${k}_IP"); ns=$(eval echo "\$DIR${k}_NS")
  ecmp_bird_conf director.conf "$WORK/bird-dir$k.conf" \
    -e "s|^router id .*|router id $ip;|" -e "s|local 198.18.0.2 as|local $ip as|" \
    -e "s|kernel table 4096;|kernel table $ECMP_TABLE;|"
  start_bg "bird-dir$k" "$ns" bird -f -c "$WORK/bird-dir$k.conf" -s "$WORK/bird-dir$k.ctl"
  for _ in $(seq 50); do ecmp_birdc "$k" show status >/dev/null 2>&1 && return 0; sleep 0.1; done
  fatal "BIRD on dir$k did not start: $(tail -n 5 "$WORK/bird-dir$k.log")"
}
# ecmp_adm K ARGS...: ulvsadm against director K
ecmp_adm() { local k=$1; shift; ip netns exec "$(eval echo "\$DIR${k}_NS")" "$ULVS_BIN/ulvsadm" --socket "$WORK/dir$k.sock" "$@"; }
# ecmp_config K [bed_config options]: $WORK/dirK.yaml, announce: route (and
# with ECMP_SYNC=1, `sync` to the other directors of the bed, UDP port 8848)
ecmp_config() {
  local k=$1 j peers="" sync=(); shift
  if [ "$ECMP_SYNC" = 1 ]; then
    for j in $(seq "$N_DIRECTORS"); do [ "$j" = "$k" ] || peers+="${peers:+, }$(eval echo "\$DIR${j}_IP"):8848"; done
    sync=(--top "sync: {listen: $(eval echo "\$DIR${k}_IP"):8848, peers: [$peers]}")
  fi
  bed_config "$WORK/dir$k.yaml" --top "announce: route" --top "route_table: $ECMP_TABLE" "${sync[@]}" "$@"
  sed -i "s|^control_socket: .*|control_socket: $WORK/dir$k.sock|" "$WORK/dir$k.yaml"
}
# ecmp_director_start K: --check, start ulvs-director on director K with
# $WORK/dirK.yaml, wait until ulvsadm answers (PID in ECMP_PIDS[K])
ecmp_director_start() {
  local k=$1 ns
  ns=$(eval echo "\$DIR${k}_NS")
  ip netns exec "$ns" "$ULVS_BIN/ulvs-director" --check --config "$WORK/dir$k.yaml" >"$WORK/check$k.log" 2>&1 \
    || fatal "ulvs-director --check dir$k: $(cat "$WORK/check$k.log")"
  start_bg "director$k" "$ns" env RUST_LOG="${RUST_LOG:-info}" "$ULVS_BIN/ulvs-director" --config "$WORK/dir$k.yaml"
  ECMP_PIDS[$k]=$BG_PID
  [ "$k" = 1 ] && DIRECTOR_LOG="$WORK/director1.log"
  for _ in $(seq 150); do
    kill -0 "$BG_PID" 2>/dev/null || fatal "ulvs-director dir$k exited at start: $(tail -n 3 "$WORK/director$k.log")"
    timeout 2 ip netns exec "$ns" "$ULVS_BIN/ulvsadm" --socket "$WORK/dir$k.sock" list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fatal "ulvsadm on dir$k did not answer within 15 s"
}
# ecmp_director_stop K: SIGTERM director K; true when it exits 0 within 10 s
ecmp_director_stop() {
  local pid=${ECMP_PIDS[$1]}
  kill -TERM "$pid" 2>/dev/null
  wait_pid "$pid" 10
}
# ecmp_kill K: SIGKILL director K (no chance to withdraw anything) and reap it
ecmp_kill() {
  local pid=${ECMP_PIDS[$1]}
  kill -KILL "$pid" 2>/dev/null
  { wait "$pid"; } 2>/dev/null
  true
}
# ecmp_paths [VIP]: the router's next hops for VIP (one per line, sorted):
# the directors it spreads the VIP's flows over
ecmp_paths() {
  ip -n "$NS_ROUTER" -4 route show "${1:-$VIP}/32" 2>/dev/null \
    | awk '{for (i = 1; i < NF; i++) if ($i == "via") print $(i + 1)}' | sort
}
# ecmp_wait_paths N SECONDS [VIP]: until the router has exactly N paths;
# prints the seconds it took (false on timeout)
ecmp_wait_paths() {
  local n=$1 t=$2 vip=${3:-$VIP} t0
  t0=$(date +%s.%N)
  while :; do
    [ "$(ecmp_paths "$vip" | wc -l)" -eq "$n" ] && { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b - a}'; return 0; }
    awk -v a="$t0" -v b="$(date +%s.%N)" -v t="$t" 'BEGIN{exit !(b - a > t)}' && return 1
    sleep 0.05
  done
}
# ecmp_up NDIRS [ecmp_config options]: router BIRD, then on directors
# 1..NDIRS: BIRD, a route-mode config and ulvs; waits until the router has
# NDIRS paths for the VIP
ecmp_up() {
  local n=$1 k t; shift
  ECMP_OPTS=("$@")
  ecmp_require
  require_director
  ecmp_router_up
  for k in $(seq "$n"); do ecmp_join "$k"; done
  if t=$(ecmp_wait_paths "$n" 20); then pass "the router has $n ECMP paths for $VIP after ${t}s: $(ecmp_paths | tr '\n' ' ')"
  else fatal "the router has $(ecmp_paths | wc -l) path(s) for $VIP, not $n: $(ip -n "$NS_ROUTER" route show "$VIP/32")"; fi
}
# ecmp_join K: BIRD, the config of ecmp_up and ulvs on director K
ecmp_join() {
  ecmp_bird_start "$1"
  ecmp_config "$1" "${ECMP_OPTS[@]}"
  ecmp_director_start "$1"
}
# ecmp_stat K EXPR: a Python expression over d, director K's stats --json
ecmp_stat() {
  ecmp_adm "$1" stats --json 2>/dev/null | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1]))' "$2"
}
# ecmp_forwarded K: frames director K forwarded so far
ecmp_forwarded() { ecmp_stat "$1" 'd["forwarded"]'; }
# ecmp_conns K: new connections director K scheduled (sum over its servers)
ecmp_conns() {
  ecmp_adm "$1" list --json 2>/dev/null | "$PY" -c 'import json,sys
d=json.load(sys.stdin); print(sum(r["conns"] for s in d["services"] for r in s["real_servers"]))'
}
# ====================================================================== end ecmp-*
