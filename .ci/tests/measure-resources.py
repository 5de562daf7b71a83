#!/usr/bin/env python3
"""Measures each service's memory and CPU, idle and under load, to size the Kubernetes requests
and limits (docs/BENCHMARKS.md, "Resource sizing"). Not part of CI: it takes minutes and its
figures depend on the machine.

Starts `kizuna serve <service>` for all four services against fresh PostgreSQL databases (JSON
logs at warn), then for each service: idle RSS and CPU over IDLE seconds, then CONCURRENCY
callers for LOAD seconds (one write and one read per round: leads CreateLead+GetLead, deals
CreateContact+GetContact, accounts CreateAccount+GetAccount, gateway ListSubjects), reading
/proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS, VmHWM). Last, the bulk path of
leads: BULK_CALLERS concurrent TrackActivities streams of 10,000-row messages (the documented
maximum, ~1 MB each) for LOAD seconds, for the peak memory a bulk load needs.

Usage: python3 .ci/tests/measure-resources.py KIZUNA_BIN [--admin-url postgres://postgres@127.0.0.1:5432/postgres]
       [--idle 10] [--load 20] [--concurrency 16] [--pool 3]
Needs grpcio and grpcio-tools (tests/python/requirements.txt) and psql.
"""
import argparse, json, os, secrets, signal, socket, subprocess, sys, tempfile, threading, time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")
KEY = "measure-only-signing-key-" + secrets.token_hex(16)


def stubs():
    from grpc_tools import protoc
    import grpc_tools
    out = Path(tempfile.mkdtemp(prefix="kizuna-measure-"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto").rglob("*.proto"))
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"-I{well_known}", f"--python_out={out}",
                        f"--grpc_python_out={out}", *files]) == 0
    sys.path.insert(0, str(out))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def memory(pid):
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def drive(pid, one, callers, seconds, rpc_error):
    """`callers` threads call `one()` (returning how many units it did) for `seconds`; returns
    (units per second, errors, CPU cores the process used meanwhile)."""
    done, errors, stop, lock = [0], [], time.time() + seconds, threading.Lock()

    def worker():
        while time.time() < stop:
            try:
                units = one()
                units = 1 if units is None else units
                with lock:
                    done[0] += units
            except rpc_error as error:
                with lock:
                    errors.append(f"{error.code().name}: {error.details()}")
    threads = [threading.Thread(target=worker) for _ in range(callers)]
    before, start = cpu_seconds(pid), time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - start
    return done[0] / elapsed, errors, (cpu_seconds(pid) - before) / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--admin-url", default=os.environ.get("KIZUNA_TEST_DATABASE_URL",
                                                              "postgres://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--idle", type=float, default=10)
    parser.add_argument("--load", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--bulk-callers", type=int, default=4)
    parser.add_argument("--pool", type=int, default=3, help="KIZUNA__DATABASE__MAX_CONNECTIONS (the manifests' value)")
    args = parser.parse_args()
    stubs()
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from kizuna.leads.v1 import leads_pb2, leads_pb2_grpc, lead_pb2, activity_pb2
    from kizuna.deals.v1 import deals_pb2, deals_pb2_grpc, contact_pb2
    from kizuna.accounts.v1 import accounts_pb2, accounts_pb2_grpc, account_pb2
    from kizuna.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    services = ["leads", "deals", "accounts", "gateway"]
    ports = {s: free_port() for s in services}
    processes, databases = {}, []
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KIZUNA__AUTH__SIGNING_KEY": KEY,
            "KIZUNA__TELEMETRY__LOG_LEVEL": "warn", "KIZUNA__SERVER__HOST": "127.0.0.1",
            "KIZUNA__DATABASE__MIGRATE_ON_START": "false", "KIZUNA__DATABASE__MAX_CONNECTIONS": str(args.pool)}
    for service in ("leads", "deals", "accounts"):
        base[f"KIZUNA__GATEWAY__{service.upper()}_URL"] = f"http://127.0.0.1:{ports[service]}"
    token = subprocess.run([args.binary, "token", "--scopes", "admin"], env=base, capture_output=True,
                           text=True, check=True).stdout.strip()
    metadata = [("authorization", f"Bearer {token}")]
    try:
        for service in services:
            name = f"kizuna_measure_{service}_{secrets.token_hex(4)}"
            subprocess.run(["psql", args.admin_url, "-qc", f'CREATE DATABASE "{name}"'], check=True)
            databases.append(name)
            url = urlunsplit(urlsplit(args.admin_url)._replace(path="/" + name))
            env = {**base, "KIZUNA__DATABASE__URL": url, "KIZUNA__SERVER__PORT": str(ports[service])}
            subprocess.run([args.binary, "migrate", service], env=env, check=True, capture_output=True)
            processes[service] = subprocess.Popen([args.binary, "serve", service], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for service in services:
            with grpc.insecure_channel(f"127.0.0.1:{ports[service]}") as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for _ in range(120):
                    try:
                        if health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1).status == 1:
                            break
                    except grpc.RpcError:
                        pass
                    time.sleep(0.5)
        time.sleep(2)

        def round_for(service, channel):
            if service == "leads":
                stub = leads_pb2_grpc.LeadsServiceStub(channel)
                def one():
                    lead = stub.CreateLead(leads_pb2.CreateLeadRequest(lead=lead_pb2.Lead(
                        email=f"m-{secrets.token_hex(6)}@example.jp", family_name="山田")), metadata=metadata)
                    stub.GetLead(leads_pb2.GetLeadRequest(name=lead.name), metadata=metadata)
            elif service == "deals":
                stub = deals_pb2_grpc.DealsServiceStub(channel)
                def one():
                    contact = stub.CreateContact(deals_pb2.CreateContactRequest(contact=contact_pb2.Contact(
                        family_name="山田", given_name="太郎", email=f"m-{secrets.token_hex(6)}@example.jp")),
                        metadata=metadata)
                    stub.GetContact(deals_pb2.GetContactRequest(name=contact.name), metadata=metadata)
            elif service == "accounts":
                stub = accounts_pb2_grpc.AccountsServiceStub(channel)
                def one():
                    account = stub.CreateAccount(accounts_pb2.CreateAccountRequest(account=account_pb2.Account(
                        display_name=f"Kizuna {secrets.token_hex(4)}", type=account_pb2.Account.TYPE_COMPANY)),
                        metadata=metadata)
                    stub.GetAccount(accounts_pb2.GetAccountRequest(name=account.name), metadata=metadata)
            else:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                def one():
                    stub.ListSubjects(gateway_pb2.ListSubjectsRequest(page_size=10), metadata=metadata)
            return one

        rows = []
        for service in services:
            pid = processes[service].pid
            before, start = cpu_seconds(pid), time.time()
            time.sleep(args.idle)
            idle_cpu = (cpu_seconds(pid) - before) / (time.time() - start)
            idle_mem = memory(pid)["VmRSS"]
            channel = grpc.insecure_channel(f"127.0.0.1:{ports[service]}")
            rate, errors, load_cpu = drive(pid, round_for(service, channel), args.concurrency, args.load, grpc.RpcError)
            mem = memory(pid)
            channel.close()
            rows.append({"service": service, "idle_rss_mib": round(idle_mem, 1), "idle_cpu_cores": round(idle_cpu, 4),
                         "rounds_per_s": round(rate, 1), "errors": len(errors),
                         "first_error": errors[0] if errors else "",
                         "load_cpu_cores": round(load_cpu, 3), "load_rss_mib": round(mem["VmRSS"], 1),
                         "peak_rss_mib": round(mem["VmHWM"], 1)})
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
        # Bulk: TrackActivities with 10,000-row messages into leads.
        pid = processes["leads"].pid
        channel = grpc.insecure_channel(f"127.0.0.1:{ports['leads']}",
                                        options=[("grpc.max_send_message_length", 8 << 20)])
        stub = leads_pb2_grpc.LeadsServiceStub(channel)
        parents = [stub.CreateLead(leads_pb2.CreateLeadRequest(lead=lead_pb2.Lead(
            email=f"bulk-{i}-{secrets.token_hex(4)}@example.jp")), metadata=metadata).name for i in range(20)]

        def message(prefix):
            return leads_pb2.TrackActivitiesRequest(activities=[leads_pb2.TrackActivityRequest(
                parent=parents[i % len(parents)], request_id=f"{prefix}-{i}",
                activity=activity_pb2.Activity(kind=activity_pb2.ACTIVITY_KIND_PAGE_VIEW,
                                               url=f"https://example.jp/pricing?v={i}")) for i in range(10_000)])

        def track():
            return stub.TrackActivities(iter([message(secrets.token_hex(6))]), metadata=metadata).accepted_count
        rate, bulk_errors, bulk_cpu = drive(pid, track, args.bulk_callers, args.load, grpc.RpcError)
        bulk = {"service": "leads (bulk TrackActivities, 10,000 rows/message)", "callers": args.bulk_callers,
                "rows_per_s": round(rate), "errors": len(bulk_errors),
                "first_error": bulk_errors[0] if bulk_errors else "",
                "cpu_cores": round(bulk_cpu, 3), **memory(pid)}
        channel.close()
        print(json.dumps(bulk, ensure_ascii=False), flush=True)
        print("| service | idle RSS | idle CPU | rounds/s | CPU under load | RSS under load | peak RSS |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['service']} | {r['idle_rss_mib']} MiB | {r['idle_cpu_cores'] * 1000:.1f} m | {r['rounds_per_s']} "
                  f"| {r['load_cpu_cores'] * 1000:.0f} m | {r['load_rss_mib']} MiB | {r['peak_rss_mib']} MiB |")
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        for name in databases:
            subprocess.run(["psql", args.admin_url, "-qc", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])


if __name__ == "__main__":
    main()
