#!/usr/bin/env bash
# Env-compatibility test: the environment the Kubernetes manifests give each container is one the
# `kizuna` binary accepts. For every service it renders the dev overlay, takes the migration
# Job's and the Deployment's container environment exactly as rendered (ConfigMap via envFrom,
# literal values, $(VAR) expansion), substitutes only what cannot exist on this machine, then:
#   1. runs `kizuna migrate <service>` with the Job's environment (must exit 0; it has no signing
#      key, and logs JSON lines on stderr);
#   2. starts `kizuna serve <service>` with the Deployment's environment and waits until
#      grpc.health.v1 reports SERVING for "" (readiness/startup) and "liveness";
#   3. checks that the log lines are JSON (KIZUNA__TELEMETRY__LOG_FORMAT=json);
#   4. sends SIGTERM and expects a clean exit within the grace period.
# The gateway starts last, pointed at the three domain services started before it.
#
# Substituted (and printed): the database URLs (a fresh SQLite file per service, or a fresh
# PostgreSQL database per service when KIZUNA_TEST_DATABASE_URL names a server and psql exists;
# on PostgreSQL the two roles of docs/OPERATIONS.md 4.1 are created with its grants: the Job's
# KIZUNA__DATABASE__MIGRATION_URL is the schema owner, the Deployment's KIZUNA__DATABASE__URL a
# role with data rights only, and the test checks that role can use every table and create none),
# the listen address (127.0.0.1 and a free port instead of 0.0.0.0:50051), the collector
# endpoint (a closed local port: export failures must not stop a service), the gateway's
# upstream URLs (the local ports), and the Downward API fields. The signing key is the dev
# overlay's own Secret value.
#
# Usage: .ci/tests/test-env-compat.sh [--print-env] [KIZUNA_BIN]
#   KIZUNA_BIN defaults to $KIZUNA_BIN, then target/release/kizuna, then target/debug/kizuna.
#   --print-env  only print the environments that would be used (no binary needed).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
print_env=false
binary="${KIZUNA_BIN:-}"
for arg in "$@"; do
  case "$arg" in
    --print-env) print_env=true ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) binary="$arg" ;;
  esac
done
if [ -z "$binary" ]; then
  for candidate in "$repo_root/target/release/kizuna" "$repo_root/target/debug/kizuna"; do
    if [ -x "$candidate" ]; then binary="$candidate"; break; fi
  done
fi
if [ "$print_env" = false ] && { [ -z "$binary" ] || [ ! -x "$binary" ]; }; then
  echo "test-env-compat: no kizuna binary (build it: cargo build --release -p kizuna, or pass its path)" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -c 'import yaml' 2> /dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check pyyaml
kubectl kustomize "$repo_root/k8s/overlays/dev" > "$work/dev.yaml"

if [ "$print_env" = false ]; then
  python3 -c 'import grpc, grpc_health.v1.health_pb2' 2> /dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check grpcio grpcio-health-checking
fi

python3 - "$work/dev.yaml" "$binary" "$work" "$print_env" <<'PY'
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import yaml

rendered, binary, work, print_only = sys.argv[1], sys.argv[2], Path(sys.argv[3]), sys.argv[4] == "true"
docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
config_maps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d["kind"] == "ConfigMap"}
secret_values = {}
for d in docs:
    if d["kind"] == "Secret":
        import base64
        secret_values[d["metadata"]["name"]] = {
            k: base64.b64decode(v).decode() for k, v in (d.get("data") or {}).items()
        }
        secret_values[d["metadata"]["name"]].update(d.get("stringData") or {})

SERVICES = ["leads", "deals", "accounts", "gateway"]
passed = failed = 0


def result(ok, name, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"test-env-compat: ok   - {name}")
    else:
        failed += 1
        print(f"test-env-compat: FAIL - {name}{': ' + detail if detail else ''}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_of(kind, service):
    for d in docs:
        if d["kind"] != kind or d["metadata"]["labels"].get("app.kubernetes.io/name") != service:
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            if c["image"].startswith("ghcr.io/kizuna/kizuna"):
                return {**c, "_labels": d["spec"]["template"]["metadata"].get("labels") or {}}
    raise SystemExit(f"no {kind} container for {service} in the dev overlay")


ADMIN_URL = os.environ.get("KIZUNA_TEST_DATABASE_URL", "")
ON_POSTGRES = ADMIN_URL.startswith("postgres") and shutil.which("psql") and not print_only
created = []  # (database, owner role, service role) to drop at the end


def psql(url, sql):
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True,
                          capture_output=True, text=True).stdout.strip()


def as_user(url, user, database):
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}", path="/" + database))


def database_urls(service):
    """(migration URL, service URL): on PostgreSQL a schema-owning role and a data-only role with
    the grants of docs/OPERATIONS.md 4.1 (trust authentication, as on the CI machine)."""
    if ON_POSTGRES:
        suffix = secrets.token_hex(4)
        name, owner, app = f"kizuna_envcompat_{service}_{suffix}", f"envcompat_{service}_owner_{suffix}", f"envcompat_{service}_{suffix}"
        psql(ADMIN_URL, f'CREATE ROLE "{owner}" LOGIN')
        psql(ADMIN_URL, f'CREATE ROLE "{app}" LOGIN')
        psql(ADMIN_URL, f'CREATE DATABASE "{name}" OWNER "{owner}"')
        created.append((name, owner, app))
        # The grants, exactly as documented (run as the owner, in the service's database).
        psql(as_user(ADMIN_URL, owner, name), f"""
            REVOKE ALL ON DATABASE "{name}" FROM PUBLIC;
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT CONNECT, TEMPORARY ON DATABASE "{name}" TO "{app}";
            GRANT USAGE ON SCHEMA public TO "{app}";
            ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
              GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "{app}";
            ALTER DEFAULT PRIVILEGES FOR ROLE "{owner}" IN SCHEMA public
              GRANT USAGE, SELECT ON SEQUENCES TO "{app}";""")
        return as_user(ADMIN_URL, owner, name), as_user(ADMIN_URL, app, name)
    url = f"sqlite://{work}/{service}.db?mode=rwc"
    return url, url


def role_problems(service_url):
    """What the service's role may do in its database after the migration: use every table,
    create nothing."""
    problems = []
    rows = psql(service_url, """
        SELECT c.relname, has_table_privilege(c.oid, 'SELECT,INSERT,UPDATE,DELETE')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')""").splitlines()
    if not rows:
        problems.append("no tables in the service's database")
    problems += [f"no data rights on table {r.split('|')[0]}" for r in rows if not r.endswith("|t")]
    sequences = psql(service_url, """
        SELECT c.relname, has_sequence_privilege(c.oid, 'USAGE')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind = 'S'""").splitlines()
    problems += [f"no USAGE on sequence {r.split('|')[0]}" for r in sequences if not r.endswith("|t")]
    if psql(service_url, "SELECT has_schema_privilege('public', 'CREATE')") != "f":
        problems.append("the service's role may create tables in schema public")
    return problems


def rendered_env(container, service, db_url, ports):
    """The container's environment as the kubelet would build it, with the substitutions."""
    env, substituted = {}, {}
    for source in container.get("envFrom") or []:
        env.update(config_maps[source["configMapRef"]["name"]])
    downward = {"metadata.namespace": "kizuna-dev", "metadata.name": f"{service}-envcompat",
                "spec.nodeName": "localhost"}
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item:
            # $(VAR) refers to variables defined earlier in the list (the kubelet's rule).
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), item["value"])
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            if name in db_url:
                env[name] = db_url[name]
                substituted[name] = db_url[name]
            else:
                env[name] = secret_values[ref["name"]][ref["key"]]
        elif "fieldRef" in item["valueFrom"]:
            path = item["valueFrom"]["fieldRef"]["fieldPath"]
            label = re.fullmatch(r"metadata\.labels\['([^']+)'\]", path)
            # A missing label gives an empty value, as the kubelet does.
            env[name] = container["_labels"].get(label.group(1), "") if label else downward[path]
    overrides = {"KIZUNA__SERVER__HOST": "127.0.0.1", "KIZUNA__SERVER__PORT": str(ports[service])}
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
        overrides["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{ports['collector']}"
    for key in ("LEADS", "DEALS", "ACCOUNTS"):
        name = f"KIZUNA__GATEWAY__{key}_URL"
        if name in env:
            overrides[name] = f"http://127.0.0.1:{ports[key.lower()]}"
    env.update(overrides)
    substituted.update(overrides)
    return env, substituted


def health(port, service_name):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service_name), timeout=2)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as error:
            return error.code().name


ports = {name: free_port() for name in SERVICES + ["collector"]}
processes = []
try:
    for service in SERVICES:
        migration_url, service_url = database_urls(service)
        db_url = {"KIZUNA__DATABASE__URL": service_url, "KIZUNA__DATABASE__MIGRATION_URL": migration_url}
        job_env, job_subst = rendered_env(container_of("Job", service), service, db_url, ports)
        run_env, run_subst = rendered_env(container_of("Deployment", service), service, db_url, ports)
        if print_only:
            print(f"# {service}: migrate {json.dumps(container_of('Job', service)['args'])}")
            print(json.dumps(job_env, indent=2, sort_keys=True))
            print(f"# {service}: serve {json.dumps(container_of('Deployment', service)['args'])}")
            print(json.dumps(run_env, indent=2, sort_keys=True))
            continue
        print(f"test-env-compat: {service}: substituted {json.dumps(run_subst, sort_keys=True)}")
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

        args = container_of("Job", service)["args"]
        migrate = subprocess.run([binary, *args], env={**base, **job_env}, capture_output=True, text=True, timeout=120)
        result(migrate.returncode == 0, f"{service}: `kizuna {' '.join(args)}` with the Job's environment",
               f"exit {migrate.returncode}\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        result("KIZUNA__AUTH__SIGNING_KEY" not in job_env, f"{service}: the Job's environment has no signing key")
        migrate_lines = [l for l in migrate.stderr.splitlines() if l.strip()]
        result(any('"migrations applied"' in l for l in migrate_lines) and all(l.startswith("{") for l in migrate_lines),
               f"{service}: migrate logs JSON lines on stderr, `migrations applied` among them", migrate.stderr[-2000:])
        if ON_POSTGRES and migrate.returncode == 0:
            problems = role_problems(service_url)
            result(not problems, f"{service}: the service's role has data rights on every table and no CREATE",
                   "; ".join(problems))

        args = container_of("Deployment", service)["args"]
        log_path = work / f"{service}.log"
        log = open(log_path, "w")
        process = subprocess.Popen([binary, *args], env={**base, **run_env}, stdout=log, stderr=subprocess.STDOUT)
        processes.append(process)
        deadline, status = time.time() + 60, {}
        while time.time() < deadline and process.poll() is None:
            status = {name: health(ports[service], name) for name in ("", "liveness")}
            if all(value == "SERVING" for value in status.values()):
                break
            time.sleep(0.5)
        serving = all(value == "SERVING" for value in status.values()) and process.poll() is None
        result(serving, f"{service}: `kizuna {' '.join(args)}` with the Deployment's environment reaches SERVING "
               "(\"\" and \"liveness\")", f"health {status}, exit {process.poll()}\n{log_path.read_text()[-3000:]}")
        if not serving:
            continue
        lines = [l for l in log_path.read_text().splitlines() if l.strip()]
        def is_json(line):
            try:
                return isinstance(json.loads(line), dict)
            except ValueError:
                return False
        # Lines the process writes itself are JSON; a stray stderr line from an exporter is
        # reported but does not fail the check.
        others = [l for l in lines if not is_json(l)]
        result(bool(lines) and is_json(lines[0]), f"{service}: log lines are JSON"
               + (f" ({len(others)} non-JSON line(s), e.g. {others[0][:120]!r})" if others else ""),
               "\n".join(lines[:5]))

    # Graceful shutdown, gateway first (as a rolling update would stop pods one by one).
    leads_config = next(v for k, v in config_maps.items() if k.startswith("leads-config"))
    grace = int(leads_config.get("KIZUNA__SERVER__GRACE_PERIOD_SECS", "20"))
    for service, process in reversed(list(zip(SERVICES, processes))):
        if process.poll() is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=grace + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            code = "killed after timeout"
        result(code == 0, f"{service}: SIGTERM gives a clean exit within {grace + 10} s", f"exit {code}")
finally:
    for process in processes:
        if process.poll() is None:
            process.kill()
    for name, owner, app in created:
        subprocess.run(["psql", ADMIN_URL, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], capture_output=True)
        subprocess.run(["psql", ADMIN_URL, "-qc", f'DROP ROLE IF EXISTS "{app}"; DROP ROLE IF EXISTS "{owner}"'], capture_output=True)

if not print_only:
    print(f"test-env-compat: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
PY
