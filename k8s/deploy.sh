#!/usr/bin/env bash
# Deploys a Kizuna overlay in the order migrations need:
#
#   1. render the overlay (kubectl kustomize);
#   2. delete the previous migration Jobs (Jobs are immutable, and a finished Job would not run
#      again): re-running a migration is safe, applied versions are recorded and an advisory lock
#      serialises migrators;
#   3. apply everything except the Deployments (namespace, ServiceAccounts, ConfigMaps, Services,
#      NetworkPolicies, PodDisruptionBudgets, HorizontalPodAutoscalers, dev databases, collector,
#      and the migration Jobs);
#   4. wait until every migration Job has completed (stop on the first failed one);
#   5. apply everything (the Deployments roll: maxUnavailable 0, maxSurge 1) and wait for the
#      rollouts.
#
# Usage: k8s/deploy.sh [--skip-migrations] [--timeout SECONDS] OVERLAY_DIR
#   --skip-migrations  leave the migration Jobs alone (a rollback to an older release: its
#                      binary refuses a database migrated by a newer one, and must not run)
# Environment: KUBECTL (default kubectl), NAMESPACE (default: the overlay's `namespace:`).
set -euo pipefail

kubectl="${KUBECTL:-kubectl}"
skip_migrations=false
timeout=900
overlay=""
while [ $# -gt 0 ]; do
  case "$1" in
    --skip-migrations) skip_migrations=true; shift ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "deploy: unknown option $1" >&2; exit 2 ;;
    *) overlay="$1"; shift ;;
  esac
done
[ -n "$overlay" ] && [ -f "$overlay/kustomization.yaml" ] \
  || { echo "usage: k8s/deploy.sh [--skip-migrations] [--timeout SECONDS] OVERLAY_DIR" >&2; exit 2; }
namespace="${NAMESPACE:-$(sed -n 's/^namespace:[[:space:]]*//p' "$overlay/kustomization.yaml" | head -n 1)}"
[ -n "$namespace" ] || { echo "deploy: set NAMESPACE or namespace: in the overlay" >&2; exit 2; }

log() { printf 'deploy: %s\n' "$*"; }
migrations='app.kubernetes.io/part-of=kizuna,app.kubernetes.io/component=migration'
rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT

log "rendering $overlay (namespace $namespace)"
"$kubectl" kustomize "$overlay" > "$rendered"

if [ "$skip_migrations" = true ]; then
  log "skipping migrations"
  first_phase='kizuna.dev/apply-after!=migrations,app.kubernetes.io/component!=migration'
  everything='app.kubernetes.io/component!=migration'
else
  log "deleting the previous migration Jobs"
  "$kubectl" delete job --namespace "$namespace" --selector "$migrations" \
    --ignore-not-found --wait=true
  first_phase='kizuna.dev/apply-after!=migrations'
  everything=''
fi

log "applying everything but the Deployments"
"$kubectl" apply --filename "$rendered" --selector "$first_phase"

if [ "$skip_migrations" = false ]; then
  log "waiting for the migration Jobs"
  deadline=$((SECONDS + timeout))
  jobs="$("$kubectl" get job --namespace "$namespace" --selector "$migrations" --output name)"
  [ -n "$jobs" ] || { log "no migration Jobs found"; exit 1; }
  for job in $jobs; do
    while :; do
      state="$("$kubectl" get "$job" --namespace "$namespace" \
        --output 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')"
      case " $state " in
        *" Complete "*) log "$job completed"; break ;;
        *" Failed "*)
          log "$job failed; its log:"
          "$kubectl" logs --namespace "$namespace" "$job" --tail=50 || true
          exit 1 ;;
      esac
      if [ "$SECONDS" -ge "$deadline" ]; then log "timed out waiting for $job"; exit 1; fi
      sleep 3
    done
  done
fi

log "applying everything"
"$kubectl" apply --filename "$rendered" ${everything:+--selector "$everything"}

log "waiting for the rollouts"
"$kubectl" rollout status deployment --namespace "$namespace" \
  --selector 'app.kubernetes.io/part-of=kizuna' --timeout "${timeout}s"
log "done"
