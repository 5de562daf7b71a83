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
# While waiting (steps 4 and 5) it reads the pods' container states and stops at once, naming
# the pod, the reason and the kubelet's message, when a pod cannot succeed without a change:
# the image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName), the container
# cannot be created (CreateContainerConfigError: a missing Secret or key; CreateContainerError,
# RunContainerError), it crash-loops (CrashLoopBackOff), or `kizuna` exited with 64 (a setting
# is missing or wrong; its log is printed). Unschedulable pods are reported and waited for.
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
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "deploy: unknown option $1" >&2; exit 2 ;;
    *) overlay="$1"; shift ;;
  esac
done
[ -n "$overlay" ] && [ -f "$overlay/kustomization.yaml" ] \
  || { echo "usage: k8s/deploy.sh [--skip-migrations] [--timeout SECONDS] OVERLAY_DIR" >&2; exit 2; }
namespace="${NAMESPACE:-$(sed -n 's/^namespace:[[:space:]]*//p' "$overlay/kustomization.yaml" | head -n 1)}"
[ -n "$namespace" ] || { echo "deploy: set NAMESPACE or namespace: in the overlay" >&2; exit 2; }

log() { printf 'deploy: %s\n' "$*"; }

# Container states of the pods matching a selector: "pod<TAB>reason<TAB>message" per waiting or
# terminated container ("exit N" as the reason of a terminated one), and Unschedulable pods.
pod_template='{{range .items}}{{$pod := .metadata.name}}{{range .status.containerStatuses}}{{with .state.waiting}}{{$pod}}{{"\t"}}{{.reason}}{{"\t"}}{{.message}}{{"\n"}}{{end}}{{with .state.terminated}}{{$pod}}{{"\t"}}exit {{.exitCode}}{{"\t"}}{{.reason}}{{"\n"}}{{end}}{{end}}{{range .status.conditions}}{{if eq .reason "Unschedulable"}}{{$pod}}{{"\t"}}Unschedulable{{"\t"}}{{.message}}{{"\n"}}{{end}}{{end}}{{end}}'

reported=""
# stuck SELECTOR: exits the script with the reason when a pod matching SELECTOR cannot get
# further without a change; prints what it is waiting for otherwise.
stuck() {
  local states pod reason message
  states="$("$kubectl" get pods --namespace "$namespace" --selector "$1" \
    --output "go-template=$pod_template" 2> /dev/null)" || return 0
  while IFS=$'\t' read -r pod reason message; do
    [ -n "$pod" ] || continue
    case "$reason" in
      ErrImagePull|ImagePullBackOff|InvalidImageName|ErrImageNeverPull)
        log "pod $pod cannot pull its image ($reason): ${message:-no message}"
        log "is the image built and pushed, and does the overlay's images: name it? (docs/OPERATIONS.md, 2.1)"
        exit 1 ;;
      CreateContainerConfigError|CreateContainerError|RunContainerError)
        log "pod $pod cannot start its container ($reason): ${message:-no message}"
        log "a referenced Secret, ConfigMap or key is missing? (k8s/base/secrets.example.yaml)"
        exit 1 ;;
      CrashLoopBackOff)
        log "pod $pod is crash-looping: ${message:-no message}; its last log:"
        "$kubectl" logs --namespace "$namespace" "$pod" --previous --tail=30 || true
        exit 1 ;;
      "exit 64")
        log "pod $pod: kizuna exited with 64, a configuration error; its log:"
        "$kubectl" logs --namespace "$namespace" "$pod" --tail=30 || true
        exit 1 ;;
      Unschedulable|"exit "[1-9]*)
        # Worth saying once: the scheduler may find room, a Job retries up to its backoffLimit.
        case "$reported" in *"|$pod $reason|"*) continue ;; esac
        reported="$reported|$pod $reason|"
        log "waiting: pod $pod: $reason${message:+: $message}" ;;
    esac
  done <<< "$states"
}
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
      stuck "job-name=${job#*/}"
      if [ "$SECONDS" -ge "$deadline" ]; then log "timed out waiting for $job"; exit 1; fi
      sleep 3
    done
  done
fi

log "applying everything"
"$kubectl" apply --filename "$rendered" ${everything:+--selector "$everything"}

log "waiting for the rollouts"
servers='app.kubernetes.io/part-of=kizuna,app.kubernetes.io/component=server'
deadline=$((SECONDS + timeout))
for deployment in $("$kubectl" get deployment --namespace "$namespace" --selector "$servers" --output name); do
  while :; do
    status="$("$kubectl" rollout status "$deployment" --namespace "$namespace" --watch=false)"
    case "$status" in
      *"successfully rolled out"*) log "$deployment rolled out"; break ;;
    esac
    stuck "app.kubernetes.io/name=${deployment#*/},app.kubernetes.io/component=server"
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out waiting for $deployment: $status"
      exit 1
    fi
    sleep 3
  done
done
log "done"
