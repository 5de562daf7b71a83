#!/usr/bin/env bash
# Tests .ci/validate-deploy.sh: it must pass on the unmodified k8s/ and docker/ trees and fail on
# each deliberately broken copy (an unknown field, a missing probe, a probe of the wrong type, a
# setting the binary does not know, a committed Secret in prod, an unjustified checkov skip, a
# memory-scaled autoscaler, a broken connection budget, a probe port off the configured port, a
# migration Job with the signing key, missing resource attributes, a wrong GOMEMLIMIT; and for
# docker/: an unpinned base image, a fallback signing key, no health check, a gateway that does
# not wait for healthy services). Each case copies k8s/ or docker/ to a temporary directory;
# the repository is never modified.
#
# Usage: .ci/tests/test-validate-deploy.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
validate="$repo_root/.ci/validate-deploy.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -c 'import yaml' 2> /dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check pyyaml

passed=0
failed=0
say() { printf 'test-validate-deploy: %s\n' "$*"; }

# fresh_copy NAME -> prints the path of a new copy of k8s/
fresh_copy() {
  local dir="$work/$1"
  mkdir -p "$dir"
  cp -R "$repo_root/k8s" "$dir/k8s"
  echo "$dir/k8s"
}

# expect pass|fail NAME DIR [EXPECTED_TEXT] [docker]: runs the validator on the k8s tree DIR
# (Kubernetes only; the Docker files are checked once, in the unmodified case), or with
# "docker" on the docker/ tree DIR alone.
expect() {
  local want="$1" name="$2" dir="$3" text="${4:-}" status=0 args=(--no-docker "$3")
  [ "$name" != "unmodified tree" ] || args=("$dir")
  [ "${5:-}" != docker ] || args=(--docker-only --docker-dir "$dir")
  "$validate" "${args[@]}" > "$work/$name.log" 2>&1 || status=$?
  local ok=true
  if [ "$want" = pass ] && [ "$status" -ne 0 ]; then ok=false; fi
  if [ "$want" = fail ] && [ "$status" -eq 0 ]; then ok=false; fi
  if [ -n "$text" ] && ! grep -qF -- "$text" "$work/$name.log"; then ok=false; fi
  if [ "$ok" = true ]; then
    passed=$((passed + 1))
    say "ok   - $name (validator exit $status${text:+, reported \"$text\"})"
  else
    failed=$((failed + 1))
    say "FAIL - $name: expected $want${text:+ reporting \"$text\"}, validator exited $status; its output:"
    sed 's/^/    /' "$work/$name.log"
  fi
}

# edit FILE PYTHON: rewrites a YAML stream with a Python expression over `docs` (a list).
edit() {
  python3 - "$1" "$2" <<'PY'
import sys, yaml
path, code = sys.argv[1:]
docs = [d for d in yaml.safe_load_all(open(path)) if d]
exec(code)
with open(path, "w") as f:
    yaml.safe_dump_all(docs, f, sort_keys=False)
PY
}
deployment='next(d for d in docs if d["kind"] == "Deployment")'
container="${deployment}[\"spec\"][\"template\"][\"spec\"][\"containers\"][0]"

# 1. The unmodified tree passes (Docker files included).
expect pass "unmodified tree" "$repo_root/k8s"

# 2. An unknown field in a Deployment: strict schema validation must reject it.
dir="$(fresh_copy unknown-field)"
edit "$dir/base/leads.yaml" "${deployment}['spec']['template']['spec']['containers'][0]['imagePullPolicyy'] = 'Always'"
expect fail "unknown field" "$dir" "Additional properties are not allowed ('imagePullPolicyy' was unexpected)"

# 3. A Deployment without a readiness probe.
dir="$(fresh_copy missing-probe)"
edit "$dir/base/deals.yaml" "del ${container}['readinessProbe']"
expect fail "missing readiness probe" "$dir" "readinessProbe missing"

# 4. A liveness probe that is not a native gRPC probe.
dir="$(fresh_copy http-probe)"
edit "$dir/base/accounts.yaml" "${container}['livenessProbe'] = {'tcpSocket': {'port': 50051}}"
expect fail "liveness probe not gRPC" "$dir" "livenessProbe must be a native grpc probe"

# 5. A liveness probe on the overall health service (would restart pods on a database outage).
dir="$(fresh_copy liveness-service)"
edit "$dir/base/gateway.yaml" "del ${container}['livenessProbe']['grpc']['service']"
expect fail "liveness probe on the database-dependent service" "$dir" "livenessProbe must check health service 'liveness'"

# 6. A setting the binary does not know (a typo in the env file).
dir="$(fresh_copy unknown-setting)"
echo "KIZUNA__DATABASE__MAX_CONECTIONS=20" >> "$dir/base/leads.env"
expect fail "unknown setting" "$dir" "KIZUNA__DATABASE__MAX_CONECTIONS is not a setting the binary knows"

# 7. A Secret committed into the prod overlay.
dir="$(fresh_copy prod-secret)"
cat >> "$dir/overlays/prod/kustomization.yaml" <<'EOF'
secretGenerator:
  - name: kizuna-auth
    literals: [signing-key=committed-by-mistake-0123456789abcdef]
EOF
expect fail "Secret in prod" "$dir" "Secret objects belong in a secret manager"

# 8. A checkov skip without a reason.
dir="$(fresh_copy unjustified-skip)"
echo "CKV_K8S_8" >> "$dir/checkov-skips.txt"
expect fail "checkov skip without a reason" "$dir" "every line must be 'CKV_... # reason'"

# 9. A security regression checkov catches (privilege escalation allowed).
dir="$(fresh_copy privilege-escalation)"
edit "$dir/base/leads.yaml" "${container}['securityContext']['allowPrivilegeEscalation'] = True"
expect fail "privilege escalation" "$dir" "CKV_K8S_20"

# 10. A migration Job missing for a service.
dir="$(fresh_copy missing-job)"
edit "$dir/base/deals.yaml" "docs[:] = [d for d in docs if d['kind'] != 'Job']"
expect fail "missing migration Job" "$dir" "no migration Job runs \`migrate deals\`"

# 11. An autoscaler that scales on memory.
dir="$(fresh_copy memory-hpa)"
edit "$dir/base/leads.yaml" "next(d for d in docs if d['kind'] == 'HorizontalPodAutoscaler')['spec']['metrics'].append({'type': 'Resource', 'resource': {'name': 'memory', 'target': {'type': 'Utilization', 'averageUtilization': 80}}})"
expect fail "HPA on memory" "$dir" "scales on memory; scale on CPU only"

# 12. A pool that breaks the shared-server connection budget (fits one server per service).
dir="$(fresh_copy budget)"
sed -i 's/^KIZUNA__DATABASE__MAX_CONNECTIONS=.*/KIZUNA__DATABASE__MAX_CONNECTIONS=6/' "$dir/base/deals.env"
expect fail "connection budget, shared server" "$dir" "prod: one shared server: the services need"
dir="$(fresh_copy budget-per-service)"
edit "$dir/base/gateway.yaml" "next(d for d in docs if d['kind'] == 'HorizontalPodAutoscaler')['spec']['maxReplicas'] = 40"
expect fail "connection budget, one server per service" "$dir" "one server per service: gateway needs"

# 13. The server listens on another port than the one the probes and the Service use.
dir="$(fresh_copy port)"
sed -i 's/^KIZUNA__SERVER__PORT=.*/KIZUNA__SERVER__PORT=50052/' "$dir/base/accounts.env"
expect fail "probe port off the configured port" "$dir" "port grpc is 50051 but KIZUNA__SERVER__PORT is 50052"

# 14. A migration Job that mounts the signing key.
dir="$(fresh_copy job-key)"
edit "$dir/base/leads.yaml" "next(d for d in docs if d['kind'] == 'Job')['spec']['template']['spec']['containers'][0]['env'].append({'name': 'KIZUNA__AUTH__SIGNING_KEY', 'valueFrom': {'secretKeyRef': {'name': 'kizuna-auth', 'key': 'signing-key'}}})"
expect fail "signing key in a migration Job" "$dir" "a migration needs no signing key"

# 15. Resource attributes: the version label missing, then not the image tag.
dir="$(fresh_copy no-version)"
sed -i '/app.kubernetes.io\/version: "0.1.0"/d' "$dir/overlays/prod/kustomization.yaml"
expect fail "service.version label missing" "$dir" "service.version comes from pod label app.kubernetes.io/version"
dir="$(fresh_copy stale-version)"
sed -i 's/newTag: 0.1.0/newTag: 0.2.0/' "$dir/overlays/prod/kustomization.yaml"
expect fail "service.version not the image tag" "$dir" "service.version is '0.1.0' but the image tag is '0.2.0'"

# 16. The collector's GOMEMLIMIT at the whole memory limit.
dir="$(fresh_copy gomemlimit)"
sed -i 's/value: 410MiB/value: 512MiB/' "$dir/components/otel-collector/collector.yaml"
expect fail "GOMEMLIMIT at 100 % of the limit" "$dir" "GOMEMLIMIT 512MiB is 100% of the 512Mi limit"

# Docker files: each case a broken copy of docker/, checked alone (--docker-only).
fresh_docker() {
  local dir="$work/$1"
  mkdir -p "$dir"
  cp -R "$repo_root/docker" "$dir/docker"
  echo "$dir/docker"
}
# 17. A base image by tag only.
dir="$(fresh_docker unpinned)"
sed -i 's|^FROM gcr.io/distroless/cc-debian12:nonroot@sha256:[0-9a-f]*|FROM gcr.io/distroless/cc-debian12:nonroot|' "$dir/Dockerfile"
expect fail "unpinned base image" "$dir" "FROM without @sha256: digest" docker

# 18. compose falls back to a committed signing key.
dir="$(fresh_docker fallback-key)"
sed -i 's|\${KIZUNA_SIGNING_KEY:?[^}]*}|${KIZUNA_SIGNING_KEY:-committed-dev-key-0123456789abcdef0123}|' "$dir/compose.yaml"
expect fail "compose fallback signing key" "$dir" "renders without KIZUNA_SIGNING_KEY" docker

# 19. A service without the health check, and a gateway that only waits for the start.
dir="$(fresh_docker no-healthcheck)"
python3 - "$dir/compose.yaml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
text = text.replace('    command: ["serve", "deals"]\n    healthcheck: *kizuna-healthcheck\n', '    command: ["serve", "deals"]\n')
text = text.replace("      accounts:\n        condition: service_healthy", "      accounts:\n        condition: service_started")
open(path, "w").write(text)
PY
expect fail "compose service without kizuna health" "$dir" "compose service deals: healthcheck must run \`kizuna health\`" docker
expect fail "gateway not waiting for healthy services" "$dir" "compose service gateway: must wait for accounts to be service_healthy" docker

echo "test-validate-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
