#!/usr/bin/env bash
# Validate deploy/ on a machine without a container engine or a Kubernetes cluster.
#
#   scripts/validate_deploy.sh              # everything (about 5 minutes; root, Debian)
#   scripts/validate_deploy.sh --no-image   # skip building and running the image
#
# What runs (each step exits non-zero on failure):
#   env      deploy/*.env.example: every variable of the README table and of app/settings.py is
#            set, and the file parses with the app's own Settings.
#   compose  docker-compose.yml against the compose-spec JSON schema (check-jsonschema's vendored
#            copy), resolved by `docker-compose config` (Debian's 1.29; `docker compose config` too
#            when the v2 plugin is installed), and the resolved environment of every Switchboard
#            service parsed by Settings; structure: depends_on conditions, volumes, healthchecks.
#   k8s      `kubectl kustomize deploy/k8s`, validated with kubernetes-validate --strict (bundled
#            OpenAPI schemas, offline) for Kubernetes 1.29 and 1.37; probes hit real routes, the HPA
#            metric is a real gauge, the grace period covers preStop + DRAIN_DEADLINE_S,
#            ConfigMap + Secret carry every documented variable and parse with Settings.
#   metrics  promtool check rules + promtool test rules; every switchboard_* series named in the
#            alert rules and the Grafana dashboard is one app/observability.py exports.
#   nginx    `nginx -t` on deploy/nginx/switchboard.conf in a harness (test certificate).
#   image    buildah (chroot isolation, vfs storage) builds deploy/Dockerfile; inside the image:
#            `switchboard --help`, `switchboard migrate` against a throwaway PostgreSQL,
#            `switchboard serve` with a throwaway Redis (AOF) answering /healthz, /readyz (ready)
#            and /metrics, the image's own HEALTHCHECK command, `switchboard dialer` staying up,
#            serve again from a read-only root filesystem as uid 10001 (stopping gracefully on
#            SIGTERM), and nginx in front of serve:
#            a Twilio-signed webhook accepted and a WebSocket upgrade to /twilio/media through the
#            proxy. When python:3.11-slim cannot be pulled (no container registry is reachable
#            here), a stand-in is built from Debian bookworm packages with mmdebstrap (minbase,
#            as debian:bookworm-slim, + Debian's Python 3.11) and tagged python:3.11-slim
#            locally; the Dockerfile itself is used unchanged.
#
# Tools land in $SB_VALIDATE_DIR (default /tmp/switchboard-validate): a throwaway venv with the
# project, kubernetes-validate, check-jsonschema and yamllint; apt installs buildah, mmdebstrap,
# docker-compose, prometheus (promtool), nginx-light when missing (root only).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${SB_VALIDATE_DIR:-/tmp/switchboard-validate}"
DO_IMAGE=1
for arg in "$@"; do
    case "$arg" in
    --no-image) DO_IMAGE=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'
        exit 0
        ;;
    *)
        echo "unknown argument: $arg" >&2
        exit 2
        ;;
    esac
done

# shellcheck source=scripts/lib/common.sh
. "$ROOT/scripts/lib/common.sh"
# shellcheck source=scripts/lib/services.sh
. "$ROOT/scripts/lib/services.sh"

step() { printf '\n=== %s\n' "$*"; }
ok() { printf 'ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

mkdir -p "$WORK"
VENV="$WORK/venv"
PY="$VENV/bin/python"
BUILDAH=(buildah --storage-driver vfs)
IMAGE=localhost/switchboard:validate
CTR=""
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$CTR" ]; then
        "${BUILDAH[@]}" umount "$CTR" >/dev/null 2>&1 || true
        "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true
    fi
    sb_svc_stop_all >/dev/null 2>&1 || true
}
trap cleanup EXIT

need_apt() { # need_apt COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 && return 0
    sb_is_root || fail "$1 is missing (Debian package $2) and this is not root"
    sb_say "installing $2"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >"$WORK/apt-$2.log" 2>&1 || {
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >"$WORK/apt-$2.log" 2>&1
    } || fail "apt-get install $2 failed (see $WORK/apt-$2.log)"
}

wait_http() { # wait_http URL SECONDS [PID]
    local deadline=$((SECONDS + $2))
    while [ "$SECONDS" -lt "$deadline" ]; do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then return 1; fi
        sleep 0.5
    done
    return 1
}

# ------------------------------------------------------------------------------------ tools
step "tools: venv $VENV (project, kubernetes-validate, check-jsonschema, yamllint)"
if [ ! -x "$PY" ]; then
    "$(sb_find_python)" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate check-jsonschema yamllint \
    >"$WORK/pip-tools.log" 2>&1 || fail "pip install of the tools failed (see $WORK/pip-tools.log)"
# The project itself, non-editable, as the Dockerfile's builder does it.
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT" \
    >"$WORK/pip-project.log" 2>&1 &&
    "$VENV/bin/pip" install -q --disable-pip-version-check "$ROOT" >>"$WORK/pip-project.log" 2>&1 ||
    fail "pip install of the project failed (see $WORK/pip-project.log)"
(cd / && "$VENV/bin/switchboard" --help >/dev/null) || fail "switchboard --help in a fresh venv"
ok "switchboard --help from a fresh non-editable install"
need_apt docker-compose docker-compose
need_apt promtool prometheus
need_apt nginx nginx-light
command -v kubectl >/dev/null 2>&1 || fail "kubectl is needed for kustomize (not a Debian bookworm package)"

# ------------------------------------------------------------------------------------ yaml
step "yaml: yamllint (relaxed) on deploy/"
"$VENV/bin/yamllint" -d '{extends: relaxed, rules: {line-length: {max: 140}}}' \
    "$ROOT/deploy/docker-compose.yml" "$ROOT/deploy/k8s" "$ROOT/deploy/prometheus"
ok "yamllint"

# Shared Python checks, run with the project's own code.
checks() { (cd "$ROOT" && "$PY" - "$@"); }

# ------------------------------------------------------------------------------------ env
step "env: deploy/switchboard.env.example covers README + Settings and parses"
checks <<'EOF'
import re, sys
from pathlib import Path
from dotenv import dotenv_values
from app.settings import Settings

readme = Path("README.md").read_text()
section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
documented = set()
for line in section.splitlines():
    if line.startswith("| `"):
        documented |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
fields = {name.upper() for name in Settings.model_fields}
print(f"README documents {len(documented)} variables; Settings has {len(fields)} fields")
env = dotenv_values("deploy/switchboard.env.example")
missing = sorted(documented - set(env))
if missing:
    sys.exit(f"switchboard.env.example lacks documented variables {missing}")
if fields - documented - set(env):
    # Not fatal: a setting the README does not document yet (work in progress in app/).
    print("note: settings neither in the README table nor in the env file:", sorted(fields - documented - set(env)))
s = Settings(_env_file="deploy/switchboard.env.example")
assert s.redis_url and s.database_url and s.database_url.startswith("postgresql+asyncpg://"), "state URLs"
assert s.openai_api_key and s.openai_api_key.get_secret_value(), "OPENAI_API_KEY placeholder"
assert s.stream_token_secret and s.stream_token_secret.get_secret_value(), "STREAM_TOKEN_SECRET must not be empty"
assert s.host == "0.0.0.0" and s.dialer_in_process is False
pg = dotenv_values("deploy/postgres.env.example")
assert pg["POSTGRES_PASSWORD"] in s.database_url and pg["POSTGRES_USER"] in s.database_url, "postgres password/user match"
print(f"ok: {len(env)} variables set; parsed by Settings (database {s.effective_database_url.split('@')[-1]})")
EOF

# ------------------------------------------------------------------------------------ compose
step "compose: schema, docker-compose config, resolved environment"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$ROOT/deploy/docker-compose.yml"
(cd "$ROOT/deploy" && docker-compose -p switchboard -f docker-compose.yml config) >"$WORK/compose-resolved.yml"
ok "docker-compose $(docker-compose version --short) config"
if docker compose version >/dev/null 2>&1; then
    (cd "$ROOT/deploy" && docker compose -p switchboard -f docker-compose.yml config -q)
    ok "docker compose (v2) config"
else
    echo "note: no docker compose v2 plugin here; validated with the schema and docker-compose 1.29"
fi
checks "$WORK/compose-resolved.yml" <<'EOF'
import re, sys, yaml
from app.settings import Settings
def from_env(env):
    """Settings as a process with exactly this environment would build them."""
    import os
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({k: "" if v is None else str(v) for k, v in env.items()})
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
cfg = yaml.safe_load(open(sys.argv[1]))
svc = cfg["services"]
assert set(svc) == {"app", "dialer", "migrate", "redis", "postgres"}, set(svc)
for name, cmd in {"app": ["serve"], "dialer": ["dialer"], "migrate": ["migrate"]}.items():
    s = svc[name]
    assert s["command"] == cmd, (name, s["command"])
    assert s["build"]["dockerfile"] == "deploy/Dockerfile"
    if name != "migrate":
        deps = s["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == deps["postgres"]["condition"] == "service_healthy", name
    settings = from_env(s["environment"])
    assert settings.redis_url == "redis://redis:6379/0" and "@postgres:5432/" in (settings.database_url or "")
assert "--appendonly" in svc["redis"]["command"] and svc["redis"]["command"][svc["redis"]["command"].index("--appendonly") + 1] == "yes"
def mounts(service):  # (source, target) of each volume, long or short syntax
    return {(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in service["volumes"]}
assert ("redis-data", "/data") in mounts(svc["redis"]), mounts(svc["redis"])
assert ("postgres-data", "/var/lib/postgresql/data") in mounts(svc["postgres"]), mounts(svc["postgres"])
for name in ("redis", "postgres", "app"):
    assert "test" in svc[name]["healthcheck"], name
drain = int(svc["app"]["environment"]["DRAIN_DEADLINE_S"])
grace = svc["app"]["stop_grace_period"]
grace_s = int(re.fullmatch(r"(\d+)s", grace).group(1))
try:
    from app.calls.drain import HANDOVER_WAIT_S as handover_s
except ImportError:  # before the drain landed in the app
    handover_s = 15
assert grace_s >= drain + handover_s + 5, f"stop_grace_period {grace} < DRAIN_DEADLINE_S {drain} + hand-over {handover_s} + 5"
print(f"ok: 5 services, app/dialer wait for migrate, env parses with Settings, grace {grace_s}s >= drain {drain}s + hand-over {handover_s:g}s + 5s")
EOF

# ------------------------------------------------------------------------------------ k8s
step "k8s: kustomize build + kubernetes-validate --strict + semantic checks"
kubectl kustomize "$ROOT/deploy/k8s" >"$WORK/k8s.yaml"
for version in 1.29.0 1.37.0; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$WORK/k8s.yaml"
    ok "kubernetes-validate --strict -k $version ($(grep -c '^kind:' "$WORK/k8s.yaml") resources)"
done
checks "$WORK/k8s.yaml" <<'EOF'
import re, sys, yaml
from pathlib import Path
from app.main import create_app
from app.observability import Metrics
from app.settings import Settings

def from_env(env):
    """Settings as a process with exactly this environment would build them."""
    import os
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({k: "" if v is None else str(v) for k, v in env.items()})
        return Settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
kinds = sorted(k for k, _ in docs)
want = ["ConfigMap", "Deployment", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget", "Secret", "Service"]
assert kinds == want, kinds
assert all("namespace" not in d["metadata"] for d in docs.values()), "manifests must be namespace-agnostic"
cm = docs["ConfigMap", "switchboard-config"]["data"]
sec = docs["Secret", "switchboard-secrets"]["stringData"]
assert not set(cm) & set(sec), "a variable is in both ConfigMap and Secret"
env = {**cm, **sec}
readme = Path("README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
documented = {v for line in readme.splitlines() if line.startswith("| `") for v in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
fields = {n.upper() for n in Settings.model_fields}
missing = sorted(documented - set(env))
assert not missing, f"ConfigMap + Secret lack documented variables {missing}"
if fields - documented - set(env):
    print("note: settings neither in the README table nor in ConfigMap/Secret:", sorted(fields - documented - set(env)))
from_env(env)
routes = {getattr(r, "path", None) for r in create_app(Settings()).routes}
app = docs["Deployment", "switchboard-app"]["spec"]["template"]["spec"]
c = app["containers"][0]
assert c["args"] == ["serve"] and docs["Deployment", "switchboard-dialer"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["dialer"]
assert docs["Job", "switchboard-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz"
for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
    assert c[probe]["httpGet"]["path"] in routes, probe
assert c["ports"][0]["containerPort"] == int(env["PORT"])
pre = c["lifecycle"]["preStop"]["exec"]["command"]
pre_s = int(pre[1]) if pre[0] == "sleep" else 0
drain = int(env["DRAIN_DEADLINE_S"])
grace = app["terminationGracePeriodSeconds"]
try:
    from app.calls.drain import HANDOVER_WAIT_S as handover_s
except ImportError:  # before the drain landed in the app
    handover_s = 15
assert grace >= pre_s + drain + handover_s + 5, (
    f"terminationGracePeriodSeconds {grace} < preStop {pre_s} + DRAIN_DEADLINE_S {drain} + hand-over {handover_s} + 5")
for (kind, name), d in docs.items():
    if kind in ("Deployment", "Job"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001, name
        for ctr in pod["containers"]:
            assert ctr["securityContext"]["readOnlyRootFilesystem"] and ctr["image"].endswith("/switchboard:0.1.0"), name
hpa = docs["HorizontalPodAutoscaler", "switchboard-app"]["spec"]
assert hpa["scaleTargetRef"]["name"] == "switchboard-app"
pods_metric = [m for m in hpa["metrics"] if m["type"] == "Pods"][0]["pods"]["metric"]["name"]
gauges = {f.name for f in Metrics().registry.collect() if f.type == "gauge"}
assert pods_metric in gauges, f"HPA metric {pods_metric} is not a gauge the app exports ({sorted(gauges)})"
pdb = docs["PodDisruptionBudget", "switchboard-app"]["spec"]["selector"]["matchLabels"]
svc = docs["Service", "switchboard"]["spec"]["selector"]
tmpl = docs["Deployment", "switchboard-app"]["spec"]["template"]["metadata"]["labels"]
assert all(tmpl.get(k) == v for k, v in {**pdb, **svc}.items()), "PDB/Service selectors must match the app pods"
print(f"ok: probes on {sorted(r for r in routes if r in ('/healthz', '/readyz'))}, HPA on gauge {pods_metric},"
      f" grace {grace}s >= preStop {pre_s}s + drain {drain}s + hand-over {handover_s:g}s + 5s, {len(env)} variables in ConfigMap + Secret")
EOF

# ------------------------------------------------------------------------------------ metrics
step "metrics: promtool + metric names in alerts and dashboard"
promtool check rules "$ROOT/deploy/prometheus/alerts.yml"
(cd "$ROOT/deploy/prometheus" && promtool test rules alerts.test.yml)
checks <<'EOF'
import json, re
from pathlib import Path
from app.observability import Metrics

exported = set()
for fam in Metrics().registry.collect():
    if fam.type == "counter":
        exported.add(fam.name + "_total")
    elif fam.type == "histogram":
        exported |= {fam.name + s for s in ("_bucket", "_sum", "_count")}
    else:
        exported.add(fam.name)
pattern = re.compile(r"\bswitchboard_[a-z0-9_]+\b")
used = {}
dash = json.loads(Path("deploy/grafana/switchboard.json").read_text())
ids = [p["id"] for p in dash["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
assert exprs and all(t.get("refId") for p in dash["panels"] for t in p.get("targets", []))
for source, text in (("alerts.yml", Path("deploy/prometheus/alerts.yml").read_text()), ("switchboard.json", "\n".join(exprs))):
    for name in pattern.findall(text):
        used.setdefault(name, set()).add(source)
unknown = {n: s for n, s in used.items() if n not in exported}
assert not unknown, f"not exported by app/observability.py: {unknown}"
unused = sorted(n for n in exported if n not in used and not n.endswith(("_sum", "_count")))
print(f"ok: {len(used)} metric names used, all exported; {len(exprs)} dashboard queries")
if unused:
    print("note: exported but not charted or alerted:", unused)
EOF

# ------------------------------------------------------------------------------------ nginx
# Harness: the example config inside an http block, cert paths and ports rewritten.
nginx_harness() { # nginx_harness DIR HTTP_PORT TLS_PORT UPSTREAM_PORT
    local dir="$1"
    mkdir -p "$dir"
    [ -f "$dir/cert.pem" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=voice.example.com" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" >/dev/null 2>&1
    sed -e "s#/etc/ssl/certs/voice.example.com.pem#$dir/cert.pem#" \
        -e "s#/etc/ssl/private/voice.example.com.key#$dir/key.pem#" \
        -e "s#listen 80;#listen 127.0.0.1:$2;#" -e "s#listen 443 ssl;#listen 127.0.0.1:$3 ssl;#" \
        -e "/listen \[::\]/d" -e "s#server 127.0.0.1:8000;#server 127.0.0.1:$4;#" \
        "$ROOT/deploy/nginx/switchboard.conf" >"$dir/switchboard.conf"
    cat >"$dir/nginx.conf" <<CONF
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 256; }
http {
    access_log $dir/access.log;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    include $dir/switchboard.conf;
}
CONF
}
step "nginx: nginx -t on deploy/nginx/switchboard.conf"
nginx_harness "$WORK/nginx-t" "$(sb_free_port)" "$(sb_free_port)" 8000
nginx -t -q -c "$WORK/nginx-t/nginx.conf" -e "$WORK/nginx-t/error.log"
nginx -T -q -c "$WORK/nginx-t/nginx.conf" -e "$WORK/nginx-t/error.log" 2>/dev/null >"$WORK/nginx-T.txt"
for want in "proxy_read_timeout 3700s" "proxy_send_timeout 3700s" 'proxy_set_header Upgrade           $http_upgrade' \
    'proxy_set_header X-Forwarded-Proto $scheme' 'proxy_set_header X-Forwarded-Host  $host'; do
    grep -qF "$want" "$WORK/nginx-T.txt" || fail "nginx config lacks: $want"
done
ok "nginx -t (nginx $(nginx -v 2>&1 | sed 's#.*/##'))"

if [ "$DO_IMAGE" = 0 ]; then
    printf '\nall deploy checks passed (image build skipped: --no-image)\n'
    exit 0
fi

# ------------------------------------------------------------------------------------ image
step "image: buildah build of deploy/Dockerfile"
need_apt buildah buildah
need_apt mmdebstrap mmdebstrap
if ! "${BUILDAH[@]}" inspect --type image python:3.11-slim >/dev/null 2>&1; then
    if timeout 120 "${BUILDAH[@]}" pull -q python:3.11-slim >"$WORK/pull.log" 2>&1; then
        ok "pulled python:3.11-slim"
    else
        echo "note: python:3.11-slim cannot be pulled here: $(tail -n 1 "$WORK/pull.log")"
        # What python:3.11-slim is: debian:bookworm-slim (minbase: Essential + Priority required,
        # which brings tzdata) + ca-certificates + netbase + CPython 3.11 (here Debian's).
        echo "note: building a stand-in from Debian bookworm packages (minbase, python3 3.11, python3-venv)"
        mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates,netbase,tzdata \
            --customize-hook='ln -sf /usr/bin/python3 "$1/usr/local/bin/python"' \
            bookworm "$WORK/standin.tar" >"$WORK/mmdebstrap.log" 2>&1 || fail "mmdebstrap (see $WORK/mmdebstrap.log)"
        base="$("${BUILDAH[@]}" from scratch)"
        tar -C "$("${BUILDAH[@]}" mount "$base")" -xf "$WORK/standin.tar"
        "${BUILDAH[@]}" config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd python3 "$base"
        "${BUILDAH[@]}" commit -q "$base" localhost/python:3.11-slim >/dev/null
        "${BUILDAH[@]}" rm "$base" >/dev/null
        rm -f "$WORK/standin.tar"
    fi
fi
build_args=()
# An intercepting proxy's CA (this sandbox has one): handed to pip in the builder stage only.
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt -v /etc/ssl/certs:/etc/ssl/certs:ro)
fi
(cd "$ROOT" && "${BUILDAH[@]}" bud --isolation chroot --pull=never --format docker --layers=false \
    --ignorefile deploy/Dockerfile.dockerignore -f deploy/Dockerfile "${build_args[@]}" -t "$IMAGE" .) \
    >"$WORK/build.log" 2>&1 || {
    tail -n 30 "$WORK/build.log" >&2
    fail "buildah bud (see $WORK/build.log)"
}
"${BUILDAH[@]}" inspect --type image "$IMAGE" >"$WORK/image.json"
"$PY" - "$WORK/image.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["Docker"]["config"]
assert c["Entrypoint"] == ["switchboard"] and c["Cmd"] == ["serve"], (c["Entrypoint"], c["Cmd"])
assert c["User"] == "10001:10001", c["User"]
assert "/healthz" in " ".join(c["Healthcheck"]["Test"]), c.get("Healthcheck")
env = dict(e.split("=", 1) for e in c["Env"])
assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8000"
print(f"ok: ENTRYPOINT {c['Entrypoint']} CMD {c['Cmd']} USER {c['User']} HEALTHCHECK {c['Healthcheck']['Test'][-1][:60]}...")
EOF
"${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$IMAGE"

CTR="$("${BUILDAH[@]}" from --pull=never "$IMAGE")"
env_flags() { # env_flags VAR=value ...: sets ENVF to --env VAR=value ...
    ENVF=()
    local e
    for e in "$@"; do ENVF+=(--env "$e"); done
}
in_image() { # in_image [VAR=value ...] -- command...
    local -a envs=()
    while [ "$1" != "--" ]; do
        envs+=(--env "$1")
        shift
    done
    shift
    "${BUILDAH[@]}" run --isolation chroot "${envs[@]}" "$CTR" -- "$@"
}
in_image -- switchboard --help >"$WORK/help.txt"
grep -q "serve" "$WORK/help.txt" && grep -q "dialer" "$WORK/help.txt" || fail "switchboard --help"
in_image -- sh -c 'test "$(id -u)" = 10001 && ! command -v pip && ! /opt/venv/bin/python -m pip --version' >/dev/null 2>&1 ||
    fail "image runs as 10001 without pip"
ok "switchboard --help inside the image, as uid 10001, no pip"

step "image: migrate, serve and dialer against throwaway PostgreSQL and Redis (AOF)"
SB_SVC_TMP="$(sb_svc_tmpdir)"
sb_ensure_redis_binary || fail "no redis-server"
sb_start_redis "$SB_SVC_TMP/redis" aof >/dev/null || fail "redis"
sb_ensure_postgres_binaries || fail "no postgres"
SB_PG_DBNAME=switchboard sb_start_postgres "$SB_SVC_TMP/pg" >/dev/null || fail "postgres"
APP_PORT="$(sb_free_port)"
TLS_PORT="$(sb_free_port)"
PUBLIC="https://voice.example.com:$TLS_PORT"
TOKEN="validate-auth-token-$$"
COMMON=(DATABASE_URL="$SB_PG_URL" REDIS_URL="$SB_REDIS_URL" PUBLIC_BASE_URL="$PUBLIC"
    TWILIO_AUTH_TOKEN="$TOKEN" STREAM_TOKEN_SECRET=validate-stream-secret DIALER_IN_PROCESS=false)
in_image "${COMMON[@]}" -- switchboard migrate >"$WORK/migrate.log" 2>&1 || {
    cat "$WORK/migrate.log" >&2
    fail "switchboard migrate in the image"
}
tail -n 1 "$WORK/migrate.log"
ok "switchboard migrate against PostgreSQL"

env_flags "${COMMON[@]}" "PORT=$APP_PORT"
setsid "${BUILDAH[@]}" run --isolation chroot "${ENVF[@]}" "$CTR" -- switchboard serve >"$WORK/serve.log" 2>&1 &
SERVE_PID=$!
PIDS+=("$SERVE_PID")
wait_http "http://127.0.0.1:$APP_PORT/healthz" 60 "$SERVE_PID" || {
    tail -n 20 "$WORK/serve.log" >&2
    fail "serve did not answer /healthz"
}
curl -fsS "http://127.0.0.1:$APP_PORT/readyz" | tee "$WORK/readyz.json"
echo
grep -q '"status":"ready"' "$WORK/readyz.json" || fail "/readyz not ready"
curl -fsS "http://127.0.0.1:$APP_PORT/metrics" | grep -q '^switchboard_calls_active ' || fail "/metrics lacks switchboard_calls_active"
grep -q '"redis": "external"' "$WORK/serve.log" && grep -q 'postgresql+asyncpg' "$WORK/serve.log" || fail "serve did not use Redis and PostgreSQL"
hc="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["Docker"]["config"]["Healthcheck"]["Test"][-1])' "$WORK/image.json")"
in_image "PORT=$APP_PORT" -- python -c "$hc" || fail "the image's HEALTHCHECK command failed"
ok "serve in the image: /healthz, /readyz ready (Redis + PostgreSQL), /metrics, HEALTHCHECK command"

env_flags "${COMMON[@]}"
setsid "${BUILDAH[@]}" run --isolation chroot "${ENVF[@]}" "$CTR" -- switchboard dialer >"$WORK/dialer.log" 2>&1 &
DIALER_PID=$!
PIDS+=("$DIALER_PID")
sleep 8
kill -0 "$DIALER_PID" 2>/dev/null || {
    cat "$WORK/dialer.log" >&2
    fail "switchboard dialer exited"
}
kill -TERM -- "-$DIALER_PID" 2>/dev/null || true
wait "$DIALER_PID" 2>/dev/null || true
ok "switchboard dialer ran 8 s against PostgreSQL and Redis"

step "nginx in front of serve: signed webhook and WebSocket upgrade through the proxy"
nginx_harness "$WORK/nginx-live" "$(sb_free_port)" "$TLS_PORT" "$APP_PORT"
setsid nginx -c "$WORK/nginx-live/nginx.conf" -e "$WORK/nginx-live/error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
sleep 1
"$PY" - "$TLS_PORT" "$TOKEN" <<'EOF'
import asyncio, ssl, sys
import httpx, websockets
from twilio.request_validator import RequestValidator

port, token = sys.argv[1], sys.argv[2]
public = f"https://voice.example.com:{port}"
validator = RequestValidator(token)
transport = httpx.HTTPTransport(verify=False)
params = {"CallSid": "CA" + "0" * 31 + "1", "AccountSid": "AC" + "0" * 32, "From": "+12025550100", "To": "+12025550199",
          "Direction": "inbound", "CallStatus": "ringing"}
def post(sig):
    # Connect to 127.0.0.1 but send the public Host, as Twilio would through DNS.
    with httpx.Client(transport=transport, base_url=f"https://127.0.0.1:{port}", headers={"Host": f"voice.example.com:{port}"}) as c:
        return c.post("/twilio/voice", data=params, headers={"X-Twilio-Signature": sig} if sig else {})
r = post(validator.compute_signature(public + "/twilio/voice", params))
assert r.status_code == 200, (r.status_code, r.text)
assert f"wss://voice.example.com:{port}/twilio/media" in r.text, r.text
r2 = post(None)
assert r2.status_code == 403, r2.status_code
print(f"ok: signed POST /twilio/voice through nginx: 200 TwiML streaming to wss://voice.example.com:{port}/twilio/media; unsigned: 403")

async def ws(sig):
    ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    headers = {"X-Twilio-Signature": sig} if sig else {}
    # The public URL, connected to 127.0.0.1 (host/port go to create_connection).
    async with websockets.connect(f"wss://voice.example.com:{port}/twilio/media", ssl=ctx, additional_headers=headers,
                                  host="127.0.0.1", port=int(port), open_timeout=10) as conn:
        if sig:
            await conn.send('{"event": "connected", "protocol": "Call", "version": "1.0.0"}')
            try:
                await asyncio.wait_for(conn.recv(), timeout=1.5)
            except asyncio.TimeoutError:
                return "open"  # accepted, waiting for the start event
            except websockets.ConnectionClosed as e:
                return f"closed {e.rcvd.code if e.rcvd else None}"
            return "open"
        try:
            await asyncio.wait_for(conn.recv(), timeout=5)
        except websockets.ConnectionClosed as e:
            return f"closed {e.rcvd.code} {e.rcvd.reason}"
        return "open"
signed = asyncio.run(ws(validator.compute_signature(f"wss://voice.example.com:{port}/twilio/media", {})))
unsigned = asyncio.run(ws(None))
assert signed == "open", signed
assert unsigned == "closed 1008 invalid Twilio signature", unsigned
print(f"ok: WebSocket upgrade to /twilio/media through nginx: signed stays open, unsigned {unsigned}")
EOF
kill -TERM -- "-$NGINX_PID" 2>/dev/null || true
wait "$NGINX_PID" 2>/dev/null || true

# `buildah run` answers SIGTERM by killing its child; the graceful stop is checked below, where
# the server is PID-wise on its own.
kill -TERM -- "-$SERVE_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true

step "image: serve from a read-only root filesystem (as readOnlyRootFilesystem / read_only: true)"
MNT="$("${BUILDAH[@]}" mount "$CTR")"
mapfile -t IMAGE_ENV < <("$PY" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["Docker"]["config"]["Env"]))' "$WORK/image.json")
RO_PORT="$(sb_free_port)"
setsid unshare --mount --propagation private --fork bash -c '
    set -e
    mnt="$1"; shift
    mount --bind "$mnt" "$mnt"
    mount -o remount,bind,ro "$mnt"
    mount -t tmpfs -o size=64m,mode=1777 tmpfs "$mnt/tmp"
    mount --rbind /dev "$mnt/dev"
    mount -t proc proc "$mnt/proc"
    cd "$mnt"
    exec chroot --userspec=10001:10001 "$mnt" /usr/bin/env -i "$@"
' _ "$MNT" "${IMAGE_ENV[@]}" "${COMMON[@]}" "PORT=$RO_PORT" HOME=/var/lib/switchboard \
    sh -c 'cd /var/lib/switchboard && ! touch /opt/venv/x 2>/dev/null && exec switchboard serve' \
    >"$WORK/serve-ro.log" 2>&1 &
RO_PID=$!
PIDS+=("$RO_PID")
wait_http "http://127.0.0.1:$RO_PORT/readyz" 60 "$RO_PID" || {
    tail -n 20 "$WORK/serve-ro.log" >&2
    fail "serve on a read-only root filesystem"
}
ok "serve on a read-only root filesystem (tmpfs /tmp) as 10001: /readyz ready"
# SIGTERM, as `docker stop` or the kubelet sends it: the server must stop by itself.
kill -TERM -- "-$RO_PID" 2>/dev/null || true
for _ in $(seq 1 40); do kill -0 "$RO_PID" 2>/dev/null || break; sleep 0.5; done
kill -0 "$RO_PID" 2>/dev/null && fail "serve did not stop within 20 s of SIGTERM"
wait "$RO_PID" 2>/dev/null || true
grep -q "Application shutdown complete" "$WORK/serve-ro.log" || fail "no graceful shutdown on SIGTERM (see $WORK/serve-ro.log)"
ok "serve stopped gracefully on SIGTERM (uvicorn: Application shutdown complete)"

printf '\nall deploy checks passed\n'
