#!/usr/bin/env bash
# Tests .ci/validate-deploy.sh: it must pass on the unmodified k8s/ tree and fail on each
# deliberately broken copy (an unknown field, a missing probe, a probe of the wrong type, a
# setting the binary does not know, a committed Secret in prod, an unjustified checkov skip).
# Each case copies k8s/ to a temporary directory; the repository is never modified.
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

# expect pass|fail NAME DIR [EXPECTED_TEXT]: runs the validator on DIR (Kubernetes only; the
# Docker files are checked once, in the unmodified case).
expect() {
  local want="$1" name="$2" dir="$3" text="${4:-}" status=0 extra=()
  [ "$name" = "unmodified tree" ] || extra=(--no-docker)
  "$validate" "${extra[@]}" "$dir" > "$work/$name.log" 2>&1 || status=$?
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

echo "test-validate-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
