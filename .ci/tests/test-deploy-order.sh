#!/usr/bin/env bash
# Tests k8s/deploy.sh without a cluster: a fake kubectl records every call (rendering is done
# by the real `kubectl kustomize`) and answers the Job, pod and rollout status queries. Checks
# that migrations run before the Deployments are applied, that a failed migration stops the
# deploy, that --skip-migrations (rollback) never touches the Jobs, and that a pod stuck on a
# reason no waiting cures (image pull, missing Secret, crash loop, exit 64) stops the deploy at
# once with that reason instead of waiting for the timeout.
#
# Usage: .ci/tests/test-deploy-order.sh
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
work="$(mktemp -d)"
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
python3 -c 'import yaml' 2> /dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check pyyaml
real_kubectl="$(command -v kubectl)" || { echo "test-deploy-order: kubectl is required" >&2; exit 1; }

cat > "$work/kubectl" <<EOF
#!/usr/bin/env bash
# Fake kubectl: logs its arguments; JOB_STATE decides what the migration Jobs report,
# JOB_PODS and SERVER_PODS what their pods' containers report (go-template lines:
# pod<TAB>reason<TAB>message), ROLLOUT what rollout status says.
echo "\$*" >> "$work/calls"
case "\$1" in
  kustomize) exec "$real_kubectl" "\$@" ;;
  get)
    case "\$*" in
      "get job"*"--output name"*) printf 'job.batch/leads-migrate\njob.batch/deals-migrate\n' ;;
      "get deployment"*"--output name"*) printf 'deployment.apps/leads\ndeployment.apps/gateway\n' ;;
      "get pods"*job-name=*) printf '%b' "\${JOB_PODS:-}" ;;
      "get pods"*) printf '%b' "\${SERVER_PODS:-}" ;;
      *jsonpath*) printf '%s ' "\${JOB_STATE:-Complete}" ;;
    esac ;;
  rollout) printf '%s\n' "\${ROLLOUT:-deployment successfully rolled out}" ;;
  logs) echo "(log of \$*)" ;;
  apply)
    # Report which kinds the selector let through, as kubectl would.
    file="" selector=""
    while [ \$# -gt 0 ]; do
      case "\$1" in --filename) file="\$2"; shift ;; --selector) selector="\$2"; shift ;; esac
      shift
    done
    python3 - "\$file" "\$selector" >> "$work/applied" <<'PY'
import sys, yaml
path, selector = sys.argv[1:]
def matches(labels):
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=")
            if labels.get(k) == v: return False
        else:
            k, v = term.split("=")
            if labels.get(k) != v: return False
    return True
kinds = sorted({d["kind"] for d in yaml.safe_load_all(open(path)) if d and matches(d["metadata"].get("labels") or {})})
print("APPLY " + " ".join(kinds))
PY
    ;;
esac
exit 0
EOF
chmod +x "$work/kubectl"

passed=0
failed=0
check() { # check NAME CONDITION-EXIT-STATUS
  if [ "$2" -eq 0 ]; then passed=$((passed + 1)); echo "test-deploy-order: ok   - $1"
  else failed=$((failed + 1)); echo "test-deploy-order: FAIL - $1"; sed 's/^/    /' "$work/calls" "$work/applied" 2>/dev/null || true; fi
}
run() { # run [deploy.sh args...]: fresh logs, returns deploy.sh's status
  rm -f "$work/calls" "$work/applied"
  KUBECTL="$work/kubectl" "$repo_root/k8s/deploy.sh" --timeout "${TIMEOUT:-5}" "$@" > "$work/out" 2>&1
}
line_of() { grep -n -m1 -- "$1" "$work/calls" | cut -d: -f1; }

# 1. A normal deploy: delete old Jobs, apply all but Deployments, wait, apply all, rollout.
status=0; run "$repo_root/k8s/overlays/prod" || status=$?
check "deploy exits 0" "$status"
delete="$(line_of 'delete job')"; first="$(grep -n -m1 '^apply' "$work/calls" | cut -d: -f1)"
wait_line="$(line_of 'jsonpath')"; last="$(grep -n '^apply' "$work/calls" | tail -n1 | cut -d: -f1)"
rollout="$(line_of 'rollout status')"
[ -n "$delete" ] && [ -n "$first" ] && [ -n "$wait_line" ] && [ -n "$rollout" ] \
  && [ "$delete" -lt "$first" ] && [ "$first" -lt "$wait_line" ] && [ "$wait_line" -lt "$last" ] \
  && [ "$last" -lt "$rollout" ]
check "order: delete Jobs < first apply < wait for Jobs < second apply < rollout status" $?
head -n1 "$work/applied" | grep -q ' Job' && ! head -n1 "$work/applied" | grep -q 'Deployment'
check "first apply has the Jobs and no Deployment" $?
sed -n 2p "$work/applied" | grep -q 'Deployment'
check "second apply has the Deployments" $?
grep -q -- '--namespace kizuna ' "$work/calls"
check "namespace taken from the overlay" $?

# 2. A failed migration stops before any Deployment is applied.
status=0; JOB_STATE=Failed run "$repo_root/k8s/overlays/prod" || status=$?
[ "$status" -ne 0 ] && [ "$(grep -c '^apply' "$work/calls")" -eq 1 ] && ! grep -q 'Deployment' "$work/applied"
check "failed migration: non-zero exit, Deployments never applied" $?

# 3. Rollback: --skip-migrations neither deletes nor applies Jobs.
status=0; run --skip-migrations "$repo_root/k8s/overlays/prod" || status=$?
[ "$status" -eq 0 ] && ! grep -q 'delete job' "$work/calls" && ! grep -q ' Job' "$work/applied" \
  && grep -q 'Deployment' "$work/applied"
check "--skip-migrations: no Job deleted or applied, Deployments applied" $?

# 4. Pods that cannot get further stop the deploy at once (the timeout is 600 s; each case must
#    end within 20 s), with the pod, the reason and the kubelet's message in the output.
fast() { # fast NAME EXPECTED-TEXT ENV=VALUE...: deploy.sh fails quickly, saying EXPECTED-TEXT
  local name="$1" text="$2" began status=0
  shift 2
  began=$SECONDS
  (export "$@" TIMEOUT=600; run "$repo_root/k8s/overlays/prod") || status=$?
  [ "$status" -ne 0 ] && [ $((SECONDS - began)) -lt 20 ] && grep -qF -- "$text" "$work/out"
  check "$name: exits non-zero within 20 s saying \"$text\"" $?
  [ "$status" -ne 0 ] || sed 's/^/    /' "$work/out"
}
fast "Job pod ImagePullBackOff" 'leads-migrate-x1 cannot pull its image (ImagePullBackOff): Back-off pulling image "ghcr.io/kizuna/kizuna:0.1.0"' \
  JOB_STATE=Running JOB_PODS='leads-migrate-x1\tImagePullBackOff\tBack-off pulling image "ghcr.io/kizuna/kizuna:0.1.0"\n'
fast "Job pod ErrImagePull" 'cannot pull its image (ErrImagePull)' \
  JOB_STATE=Running JOB_PODS='leads-migrate-x1\tErrImagePull\tmanifest unknown\n'
fast "Job pod CreateContainerConfigError" 'cannot start its container (CreateContainerConfigError): secret "kizuna-leads-db-migration" not found' \
  JOB_STATE=Running JOB_PODS='leads-migrate-x1\tCreateContainerConfigError\tsecret "kizuna-leads-db-migration" not found\n'
fast "Job pod exit 64" 'kizuna exited with 64, a configuration error' \
  JOB_STATE=Running JOB_PODS='leads-migrate-x1\texit 64\tError\n'
grep -q '^logs' "$work/calls"
check "exit 64: the pod's log is printed" $?
fast "rollout pod CrashLoopBackOff" 'pod leads-7d9-abc is crash-looping' \
  ROLLOUT='Waiting for deployment "leads" rollout to finish: 1 old replicas are pending termination...' \
  SERVER_PODS='leads-7d9-abc\tCrashLoopBackOff\tback-off 40s restarting failed container\n'
grep -q 'Deployment' "$work/applied"
check "a stuck rollout is detected after the Deployments were applied" $?

# 5. What waiting can cure is waited for (Unschedulable, a retried Job pod), until the timeout.
status=0; JOB_STATE=Running JOB_PODS='leads-migrate-x1\tUnschedulable\t0/3 nodes are available\n' \
  TIMEOUT=4 run "$repo_root/k8s/overlays/prod" || status=$?
[ "$status" -ne 0 ] && grep -q 'timed out waiting for job.batch/leads-migrate' "$work/out" \
  && [ "$(grep -c 'not scheduled\|Unschedulable' "$work/out")" -eq 1 ]
check "Unschedulable: reported once, then the timeout" $?

echo "test-deploy-order: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
