# shellcheck shell=bash
# shellcheck disable=SC2034  # SB_* results are read by the sourcing script
# Throwaway Redis and PostgreSQL servers on free loopback ports, for tests.
# Source after scripts/lib/common.sh. Typical use:
#
#   SB_SVC_TMP="$(sb_svc_tmpdir)"; trap sb_svc_stop_all EXIT
#   sb_ensure_redis_binary && sb_start_redis "$SB_SVC_TMP/redis"          # or: ... aof|rdb|both
#   sb_ensure_postgres_binaries && sb_start_postgres "$SB_SVC_TMP/pg"
#
# After a start, these are set: SB_REDIS_PORT SB_REDIS_PID SB_REDIS_URL,
# SB_PG_PORT SB_PG_USER SB_PG_DATA SB_PG_URL. sb_svc_stop_all stops whatever
# was started and removes SB_SVC_TMP; it is safe to call more than once.

SB_SVC_TMP=""
SB_REDIS_SERVER=""
SB_REDIS_CLI=""
SB_REDIS_PID=""
SB_REDIS_PORT=""
SB_REDIS_URL=""
SB_PG_BINDIR=""
SB_PG_USER=""
SB_PG_DATA=""
SB_PG_PORT=""
SB_PG_URL=""
SB_PG_DBNAME="${SB_PG_DBNAME:-switchboard_test}"

# A fresh private directory for server data. Kept short (unix socket paths
# are limited to ~107 bytes), so it lives in /tmp unless TMPDIR is short.
sb_svc_tmpdir() {
    local base="${TMPDIR:-/tmp}"
    [ "${#base}" -gt 40 ] && base=/tmp
    mktemp -d "$base/sbtest.XXXXXX"
}

# --------------------------------------------------------------------- redis

# Find redis-server, installing Debian's package if root. Sets SB_REDIS_SERVER
# (and SB_REDIS_CLI when redis-cli exists). Returns 1 if it cannot be had.
sb_ensure_redis_binary() {
    if ! command -v redis-server >/dev/null 2>&1; then
        sb_apt_install redis-server || true
    fi
    SB_REDIS_SERVER="$(command -v redis-server 2>/dev/null)" || {
        SB_REDIS_SERVER=""
        return 1
    }
    SB_REDIS_CLI="$(command -v redis-cli 2>/dev/null)" || SB_REDIS_CLI=""
    return 0
}

_sb_redis_ping() {
    local port="$1" reply
    if [ -n "$SB_REDIS_CLI" ]; then
        reply="$("$SB_REDIS_CLI" -h 127.0.0.1 -p "$port" ping 2>/dev/null)" || return 1
    else
        reply="$(
            exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
            printf 'PING\r\n' >&3
            IFS= read -r -t 2 line <&3 && printf '%s' "${line%$'\r'}"
        )" 2>/dev/null || return 1
        reply="${reply#+}"
    fi
    [ "$reply" = "PONG" ]
}

# sb_start_redis DATADIR [PERSIST [PORT]]
#   PERSIST: none (default: --save "" --appendonly no), aof (appendonly,
#   fsync every second), rdb (default RDB snapshots), both (aof + rdb).
#   PORT: listen there (e.g. to restart on the same port after a crash
#   test); default: a free port, retried up to 3 times.
# Data, dump.rdb/appendonly files and redis.log go to DATADIR, so starting
# again on the same DATADIR with persistence on reloads the data.
sb_start_redis() {
    local dir="$1" persist="${2:-none}" fixed_port="${3:-}" attempt port pid deadline
    local -a opts
    mkdir -p "$dir"
    case "$persist" in
    none) opts=(--save "" --appendonly no) ;;
    aof) opts=(--save "" --appendonly yes --appendfsync everysec) ;;
    rdb) opts=(--save "3600 1 300 100 60 10000" --appendonly no) ;;
    both) opts=(--save "3600 1 300 100 60 10000" --appendonly yes --appendfsync everysec) ;;
    *) sb_die "sb_start_redis: unknown persistence mode '$persist'" ;;
    esac
    for attempt in 1 2 3; do
        port="${fixed_port:-$(sb_free_port)}"
        sb_say "starting redis on 127.0.0.1:$port (persistence: $persist)"
        "$SB_REDIS_SERVER" --port "$port" --bind 127.0.0.1 --daemonize no \
            --dir "$dir" --logfile "" --protected-mode yes "${opts[@]}" \
            >>"$dir/redis.log" 2>&1 </dev/null &
        pid=$!
        SB_REDIS_PID="$pid"
        deadline=$((SECONDS + 30))
        while :; do
            if _sb_redis_ping "$port"; then
                SB_REDIS_PORT="$port"
                SB_REDIS_URL="redis://127.0.0.1:$port/0"
                return 0
            fi
            if ! kill -0 "$pid" 2>/dev/null; then
                sb_warn "redis-server exited during start-up (attempt $attempt); log:"
                tail -n 20 "$dir/redis.log" >&2 || true
                break
            fi
            if [ "$SECONDS" -ge "$deadline" ]; then
                sb_warn "redis not ready after 30s; log:"
                tail -n 20 "$dir/redis.log" >&2 || true
                sb_stop_redis
                return 1
            fi
            sleep 0.1
        done
        wait "$pid" 2>/dev/null || true
        SB_REDIS_PID=""
        [ -z "$fixed_port" ] || return 1
    done
    return 1
}

sb_stop_redis() {
    local pid="$SB_REDIS_PID"
    [ -n "$pid" ] || return 0
    SB_REDIS_PID=""
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- postgresql

_sb_pg_bindir_ok() {
    [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ]
}

_sb_find_pg_bindir() {
    local p d
    if p="$(command -v initdb 2>/dev/null)"; then
        d="$(dirname "$(readlink -f "$p")")"
        if _sb_pg_bindir_ok "$d"; then
            printf '%s\n' "$d"
            return 0
        fi
    fi
    # Debian keeps server binaries off PATH; take the newest major version.
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV); do
        if _sb_pg_bindir_ok "$d"; then
            printf '%s\n' "$d"
            return 0
        fi
    done
    return 1
}

# Find initdb/pg_ctl/postgres, installing Debian's postgresql if root.
# Sets SB_PG_BINDIR. Returns 1 if they cannot be had.
sb_ensure_postgres_binaries() {
    if ! SB_PG_BINDIR="$(_sb_find_pg_bindir)"; then
        sb_apt_install postgresql || true
        SB_PG_BINDIR="$(_sb_find_pg_bindir)" || {
            SB_PG_BINDIR=""
            return 1
        }
    fi
    return 0
}

# Path of a client tool (pg_isready, createdb, psql): the server's bindir
# first, then PATH. Empty if not found.
_sb_pg_tool() {
    if [ -x "$SB_PG_BINDIR/$1" ]; then
        printf '%s\n' "$SB_PG_BINDIR/$1"
    else
        command -v "$1" 2>/dev/null || true
    fi
}

# Run a command as the PostgreSQL OS user, from a directory it can read.
_sb_as_pg() {
    if sb_is_root; then
        (cd "$SB_SVC_TMP" && runuser -u "$SB_PG_USER" -- "$@")
    else
        (cd "$SB_SVC_TMP" && "$@")
    fi
}

_sb_pg_ready() {
    local isready
    isready="$(_sb_pg_tool pg_isready)"
    if [ -n "$isready" ]; then
        "$isready" -q -h 127.0.0.1 -p "$SB_PG_PORT" -U "$SB_PG_USER" -d postgres
    else
        sb_port_open "$SB_PG_PORT"
    fi
}

_sb_pg_createdb() {
    local tool
    tool="$(_sb_pg_tool createdb)"
    if [ -n "$tool" ]; then
        "$tool" -h 127.0.0.1 -p "$SB_PG_PORT" -U "$SB_PG_USER" "$SB_PG_DBNAME"
        return
    fi
    tool="$(_sb_pg_tool psql)"
    if [ -n "$tool" ]; then
        "$tool" -q -h 127.0.0.1 -p "$SB_PG_PORT" -U "$SB_PG_USER" -d postgres \
            -c "CREATE DATABASE \"$SB_PG_DBNAME\""
        return
    fi
    # Last resort: the project's own driver.
    "${SB_PY:-python3}" - "$SB_PG_PORT" "$SB_PG_USER" "$SB_PG_DBNAME" <<'EOF'
import asyncio, sys
import asyncpg
async def main(port, user, db):
    conn = await asyncpg.connect(host="127.0.0.1", port=int(port), user=user, database="postgres")
    await conn.execute(f'CREATE DATABASE "{db}"')
    await conn.close()
asyncio.run(main(*sys.argv[1:]))
EOF
}

# sb_start_postgres DATADIR: initdb a trust-auth cluster in DATADIR (inside
# SB_SVC_TMP), start it on a free 127.0.0.1 port with unix sockets in
# DATADIR's parent-owned socket dir, and create database $SB_PG_DBNAME.
sb_start_postgres() {
    local dir="$1" attempt port
    SB_PG_DATA="$dir/data"
    if sb_is_root; then
        if getent passwd postgres >/dev/null 2>&1; then
            SB_PG_USER=postgres
        else
            SB_PG_USER=nobody
        fi
        # The server refuses to run as root: hand it the whole tmp tree.
        mkdir -p "$dir"
        chown -R "$SB_PG_USER" "$SB_SVC_TMP"
    else
        SB_PG_USER="$(id -un)"
        mkdir -p "$dir"
    fi
    _sb_as_pg mkdir -p "$dir/sock"
    sb_say "initdb ($SB_PG_BINDIR, as $SB_PG_USER)"
    if ! _sb_as_pg "$SB_PG_BINDIR/initdb" -D "$SB_PG_DATA" -A trust -U "$SB_PG_USER" \
        -E UTF8 --locale=C -N >"$dir/initdb.log" 2>&1; then
        sb_warn "initdb failed; log:"
        tail -n 30 "$dir/initdb.log" >&2 || true
        return 1
    fi
    _sb_as_pg sh -c "cat >>'$SB_PG_DATA/postgresql.conf'" <<EOF
# added by scripts/lib/services.sh (throwaway test cluster)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
log_min_messages = warning
EOF
    for attempt in 1 2 3; do
        port="$(sb_free_port)"
        sb_say "starting postgres on 127.0.0.1:$port"
        if _sb_as_pg "$SB_PG_BINDIR/pg_ctl" -D "$SB_PG_DATA" -l "$dir/postgres.log" \
            -o "-p $port" -w -t 30 start >/dev/null 2>&1; then
            SB_PG_PORT="$port"
            break
        fi
        sb_warn "postgres failed to start (attempt $attempt); log:"
        tail -n 20 "$dir/postgres.log" >&2 || true
        _sb_as_pg "$SB_PG_BINDIR/pg_ctl" -D "$SB_PG_DATA" stop -m immediate >/dev/null 2>&1 || true
    done
    [ -n "$SB_PG_PORT" ] || return 1
    sb_wait_until 30 "postgres" _sb_pg_ready || return 1
    _sb_pg_createdb || {
        sb_warn "could not create database $SB_PG_DBNAME"
        return 1
    }
    SB_PG_URL="postgresql+asyncpg://$SB_PG_USER@127.0.0.1:$SB_PG_PORT/$SB_PG_DBNAME"
}

sb_stop_postgres() {
    [ -n "$SB_PG_DATA" ] && [ -d "$SB_PG_DATA" ] || return 0
    local pidfile="$SB_PG_DATA/postmaster.pid" pid=""
    [ -f "$pidfile" ] && pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
    _sb_as_pg "$SB_PG_BINDIR/pg_ctl" -D "$SB_PG_DATA" stop -m immediate -w -t 15 \
        >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    SB_PG_DATA=""
}

# ------------------------------------------------------------------- cleanup

sb_svc_stop_all() {
    sb_stop_redis || true
    sb_stop_postgres || true
    if [ -n "$SB_SVC_TMP" ] && [ -d "$SB_SVC_TMP" ]; then
        rm -rf "$SB_SVC_TMP" || true
    fi
    SB_SVC_TMP=""
}
