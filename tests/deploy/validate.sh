#!/usr/bin/env bash
# tests/deploy/validate.sh [BINARY]: checks the deployment files in deploy/ with real
# validators and prints one PASS/FAIL line per check; exits 1 if any check fails.
#
# - Kubernetes: every manifest against the API's JSON schemas (kubernetes-validate, strict:
#   an unknown or misspelled field fails; an unknown kind fails too), then the properties
#   the deployment promises (replicas, anti-affinity, probes, non-root, drain time, ...).
# - The config files (the ConfigMap's config.yaml, deploy/systemd/config.yaml) are
#   checked by the proxy itself: BINARY --config FILE --check-config. Paths the image or
#   the unit provide (/usr/share/failover/sorry, /var/log/failover) point to their
#   sources here.
# - systemd: `systemd-analyze verify` (any warning fails: it only warns about an unknown
#   key or a bad value), `systemd-analyze security` (exposure at most 2.0), and the
#   directives the service promises (Type=notify, the watchdog, the sandbox, ...).
#
# BINARY defaults to target/ci/failover. Needs python3 with kubernetes-validate
# (python3 -m pip install kubernetes-validate) and systemd-analyze (apt-get install -y
# --no-install-recommends systemd); .ci/run installs both. K8S_VERSIONS (default
# "1.30.0 1.34.0") lists the Kubernetes versions whose schemas are used.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if (($#)); then
  bin=$1
  [[ $bin == /* ]] || bin=$PWD/$bin
else
  bin=$root/target/ci/failover
fi
cd "$root"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=0
pass() { echo "PASS $*"; }
fail() {
  echo "FAIL $*"
  failed=$((failed + 1))
}
one_line() { tr '\n' ' ' | sed 's/  */ /g; s/ $//'; }

# ---- Manifests, unit files and configs: parsed and checked in Python. It also writes the
# configs the proxy checks below: $tmp/kubernetes/config.yaml and $tmp/systemd/config.yaml.
if ! command -v python3 >/dev/null 2>&1; then
  fail "python3 is not installed (apt-get install -y python3)"
else
  rc=0
  K8S_VERSIONS=${K8S_VERSIONS:-1.30.0 1.34.0} python3 - "$tmp" <<'PY' || rc=$?
import glob
import os
import re
import subprocess
import sys

tmp = sys.argv[1]
versions = os.environ["K8S_VERSIONS"].split()
failures = 0
PIP = "python3 -m pip install kubernetes-validate (.ci/run installs it)"


class Bad(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Bad(msg)


def check(name, fn):
    """Runs one check; prints PASS (with what fn returns) or FAIL with the reason."""
    global failures
    try:
        detail = fn()
    except Bad as e:
        print(f"FAIL {name}: {e}")
    except Exception as e:  # a field missing or of the wrong type
        print(f"FAIL {name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    else:
        print(f"PASS {name}" + (f" ({detail})" if detail else ""))
        return True
    failures += 1
    return False


try:
    import yaml
except ImportError:
    print(f"FAIL python3 cannot import yaml (PyYAML): {PIP}")
    sys.exit(1)
try:
    import kubernetes_validate as kv
    from kubernetes_validate.utils import VersionNotSupportedError
except ImportError:
    kv = None
    print(f"FAIL kubernetes schemas: kubernetes-validate is not installed: {PIP}")
    failures += 1


class UniqueKeys(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; Kubernetes would too."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_all(text):
    return [d for d in yaml.load_all(text, Loader=UniqueKeys) if d is not None]


def seconds(v, what):
    """A duration of the proxy ("250ms", "5s", "1m") or of systemd ("30s", "1min 30s", "10")."""
    units = {None: 1, "ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|sec|min|hr|s|m|h)?", str(v))
    need(parts and re.fullmatch(r"(\s*\d+(\.\d+)?\s*(ms|sec|min|hr|s|m|h)?)+\s*", str(v)),
         f"{what}: {v!r} is not a duration")
    return sum(float(n) * units[u or None] for n, u in parts)


def port_of(addr, what):
    m = re.fullmatch(r"(?:.*:)?(\d+)", str(addr).strip())
    need(m, f"{what}: {addr!r} has no port")
    return int(m[1])


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


# ---------------------------------------------------------------- Kubernetes
KDIR = "deploy/kubernetes"
manifests = sorted(p for p in glob.glob(f"{KDIR}/*.y*ml") if os.path.basename(p) != "kustomization.yaml")
objects = []  # (file, object)


def schema_check(docs):
    seen = []
    for doc in docs:
        need(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc,
             "a document without kind and apiVersion")
        name = f"{doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
        for v in versions:
            try:
                kv.validate(doc, v, strict=True)
            except kv.ValidationError as e:
                where = ".".join(str(p) for p in e.path) or "(top)"
                raise Bad(f"{name} against {v}: {where}: {e.message}")
            except kv.SchemaNotFoundError as e:
                raise Bad(f"{name}: {e.message}")
            except VersionNotSupportedError:
                raise Bad(f"kubernetes-validate {kv.__version__} has no schemas for {v} (set K8S_VERSIONS)")
        seen.append(name)
    return f"{', '.join(seen)}; {', '.join(versions)}, strict"


valid = set()  # the manifests that parse and pass their schemas
for path in manifests:
    try:
        with open(path) as f:
            docs = load_all(f.read())
    except yaml.YAMLError as e:
        print(f"FAIL yaml {path}: {' '.join(str(e).split())}")
        failures += 1
        continue
    objects += [(path, d) for d in docs if isinstance(d, dict)]
    if kv is None:
        valid.add(path)  # not checked (reported above); the properties are still checked
    elif check(f"kubernetes schema {path}", lambda: schema_check(docs)):
        valid.add(path)


def one(kind):
    found = [o for _, o in objects if o.get("kind") == kind]
    need(len(found) == 1, f"{KDIR} holds {len(found)} {kind} objects, not one")
    return found[0]


def pod():
    return one("Deployment")["spec"]["template"]["spec"]


def container():
    cs = pod()["containers"]
    found = [c for c in cs if c.get("name") == "failover"]
    need(len(found) == 1, "no container named failover")
    return found[0]


def container_ports():
    return {p.get("name"): p["containerPort"] for p in container().get("ports", [])}


def pod_labels():
    return one("Deployment")["spec"]["template"]["metadata"]["labels"]


def config_source():
    """The ConfigMap key mounted where --config points: (ConfigMap, key, path in the pod)."""
    args = container().get("args", []) + container().get("command", [])
    path = None
    for i, a in enumerate(args):
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        elif a == "--config" and i + 1 < len(args):
            path = args[i + 1]
    need(path, "the container has no --config argument")
    for m in container().get("volumeMounts", []):
        base = m["mountPath"].rstrip("/") + "/"
        if path.startswith(base) and "subPath" not in m:
            vol = [v for v in pod().get("volumes", []) if v["name"] == m["name"]]
            need(vol and "configMap" in vol[0], f"volume {m['name']} is not a ConfigMap")
            cm_name = vol[0]["configMap"]["name"]
            cms = [o for _, o in objects if o.get("kind") == "ConfigMap" and o["metadata"]["name"] == cm_name]
            need(cms, f"ConfigMap {cm_name} is not in {KDIR}")
            key = path[len(base):]
            need(key in cms[0].get("data", {}), f"ConfigMap {cm_name} has no key {key}")
            need(m.get("readOnly") is True, f"the mount at {m['mountPath']} is not readOnly")
            return cms[0], key, path, m["mountPath"]
    raise Bad(f"no ConfigMap volume is mounted where --config={path} points")


def k8s_config():
    cm, key, _, _ = config_source()
    cfg = yaml.load(cm["data"][key], Loader=UniqueKeys)
    need(isinstance(cfg, dict), "the config is not a YAML mapping")
    return cfg


def drain(cfg, where):
    need("shutdown_delay" in cfg and "shutdown_timeout" in cfg,
         f"{where} must set shutdown_delay and shutdown_timeout (the drain the grace time covers)")
    return seconds(cfg["shutdown_delay"], "shutdown_delay") + seconds(cfg["shutdown_timeout"], "shutdown_timeout")


def dockerfile():
    with open("Dockerfile") as f:
        return f.read().replace("\\\n", " ")


def c_replicas():
    n = one("Deployment")["spec"].get("replicas")
    need(n == 2, f"replicas is {n}, want 2")
    return "2 replicas"


def c_anti_affinity():
    aa = pod().get("affinity", {}).get("podAntiAffinity", {})
    terms = [t["podAffinityTerm"] for t in aa.get("preferredDuringSchedulingIgnoredDuringExecution", [])]
    terms += aa.get("requiredDuringSchedulingIgnoredDuringExecution", [])
    ok = [t for t in terms if t.get("topologyKey") == "kubernetes.io/hostname"
          and t.get("labelSelector", {}).get("matchLabels") and subset(t["labelSelector"]["matchLabels"], pod_labels())]
    need(ok, "no pod anti-affinity by kubernetes.io/hostname that selects the Deployment's own pods")
    return "by kubernetes.io/hostname"


def probe(kind, path):
    p = container().get(kind)
    need(p and "httpGet" in p, f"no {kind} with httpGet")
    need(p["httpGet"].get("path") == path, f"{kind} path is {p['httpGet'].get('path')!r}, want {path}")
    port = p["httpGet"].get("port")
    need(port == "http" and "http" in container_ports(), f"{kind} port is {port!r}, want the container port named http")
    return p


def c_liveness():
    probe("livenessProbe", "/__failover/live")
    return "GET /__failover/live on port http"


def c_readiness():
    p = probe("readinessProbe", "/__failover/ready")
    need(p.get("periodSeconds") == 2 and p.get("failureThreshold") == 1,
         f"periodSeconds {p.get('periodSeconds')}, failureThreshold {p.get('failureThreshold')}: want 2 and 1")
    return "GET /__failover/ready on port http, every 2s, out after 1 failure"


def c_non_root():
    psc, csc = pod().get("securityContext", {}), container().get("securityContext", {})
    need(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot is not true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    m = re.search(r"useradd\b[^\n]*?--uid\s+(\d+)", dockerfile())
    need(m, "the Dockerfile's useradd --uid is not found")
    need(uid == int(m[1]), f"runAsUser is {uid}, the image's user (Dockerfile) is {m[1]}")
    return f"runAsNonRoot, runAsUser {uid} as in the Dockerfile"


def c_hardening():
    psc, csc = pod().get("securityContext", {}), container().get("securityContext", {})
    need(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
    need(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
    need(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop is not [ALL]")
    need(not csc.get("capabilities", {}).get("add"), "capabilities are added")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    need(seccomp == "RuntimeDefault", f"seccompProfile is {seccomp!r}, want RuntimeDefault")
    return "readOnlyRootFilesystem, no privilege escalation, no capabilities, seccomp RuntimeDefault"


def c_resources():
    r = container().get("resources", {})
    for side in ("requests", "limits"):
        for res in ("cpu", "memory"):
            need(res in r.get(side, {}), f"resources.{side}.{res} is not set")
    return f"requests {r['requests']['cpu']}/{r['requests']['memory']}, limits {r['limits']['cpu']}/{r['limits']['memory']}"


def c_grace():
    grace = pod().get("terminationGracePeriodSeconds")
    need(grace is not None, "terminationGracePeriodSeconds is not set")
    total = drain(k8s_config(), "the ConfigMap's config")
    need(grace > total, f"terminationGracePeriodSeconds {grace} is not above shutdown_delay + shutdown_timeout = {total:g}s")
    return f"{grace}s > shutdown_delay + shutdown_timeout = {total:g}s"


def c_config_mount():
    cm, key, path, mount = config_source()
    return f"--config={path} is key {key} of ConfigMap {cm['metadata']['name']} mounted read-only at {mount}"


def c_listen():
    cfg = k8s_config()
    listen = str(cfg.get("listen", "0.0.0.0:8080"))
    need(listen.startswith(("0.0.0.0:", "[::]:")), f"listen {listen!r} is not on all addresses: probes and the Service could not reach it")
    port = port_of(listen, "listen")
    need(container_ports().get("http") == port, f"containerPort http is {container_ports().get('http')}, listen is {listen}")
    return f"listen {listen} = containerPort http"


def c_service():
    svc = one("Service")
    need(subset(svc["spec"]["selector"], pod_labels()) and svc["spec"]["selector"], "the selector does not match the pod labels")
    ports = container_ports()
    for p in svc["spec"]["ports"]:
        t = p.get("targetPort", p["port"])
        need(t in ports if isinstance(t, str) else t in ports.values(), f"targetPort {t!r} is no container port ({ports})")
    return ", ".join(f"{p['port']} -> {p.get('targetPort')}" for p in svc["spec"]["ports"])


def c_pdb():
    pdb = one("PodDisruptionBudget")
    need(pdb["apiVersion"] == "policy/v1", f"apiVersion {pdb['apiVersion']}, want policy/v1")
    need(pdb["spec"].get("maxUnavailable") == 1, f"maxUnavailable is {pdb['spec'].get('maxUnavailable')!r}, want 1")
    need(subset(pdb["spec"]["selector"].get("matchLabels"), pod_labels()) and pdb["spec"]["selector"].get("matchLabels"),
         "the selector does not match the Deployment's pods")
    return "policy/v1, maxUnavailable 1 over the Deployment's pods"


KUSTOMIZE_FIELDS = {
    "apiVersion", "kind", "metadata", "resources", "namespace", "namePrefix", "nameSuffix", "labels",
    "commonLabels", "commonAnnotations", "images", "replicas", "patches", "configMapGenerator",
    "secretGenerator", "generatorOptions", "components", "replacements", "buildMetadata", "sortOptions",
}


def c_kustomization():
    with open(f"{KDIR}/kustomization.yaml") as f:
        k = yaml.load(f, Loader=UniqueKeys)
    need(k.get("apiVersion") == "kustomize.config.k8s.io/v1beta1" and k.get("kind") == "Kustomization",
         "not apiVersion kustomize.config.k8s.io/v1beta1, kind Kustomization")
    unknown = set(k) - KUSTOMIZE_FIELDS
    need(not unknown, f"unknown fields {sorted(unknown)}")
    listed = k.get("resources", [])
    need(len(listed) == len(set(listed)), "a resource is listed twice")
    files = {os.path.basename(p) for p in manifests}
    need(set(listed) == files, f"resources {sorted(listed)} are not the manifests {sorted(files)}")
    return f"resources: {', '.join(listed)}"


def c_kustomize_build():
    out = subprocess.run(["kubectl", "kustomize", KDIR], capture_output=True, text=True, timeout=30)
    need(out.returncode == 0, f"kubectl kustomize failed: {' '.join(out.stderr.split())}")
    built = load_all(out.stdout)
    want = sorted(f"{o['kind']}/{o['metadata']['name']}" for _, o in objects)
    got = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in built)
    need(got == want, f"built {got}, want {want}")
    if kv is not None:
        schema_check(built)
    return f"{len(built)} objects" + (", valid" if kv is not None else "")


object_checks = [
    ("deployment replicas", c_replicas),
    ("deployment anti-affinity", c_anti_affinity),
    ("deployment liveness probe", c_liveness),
    ("deployment readiness probe", c_readiness),
    ("deployment non-root user", c_non_root),
    ("deployment container hardening", c_hardening),
    ("deployment resources", c_resources),
    ("deployment config mount", c_config_mount),
    ("deployment grace period above the drain", c_grace),
    ("deployment listen port", c_listen),
    ("service targets the named port", c_service),
    ("pod disruption budget", c_pdb),
]
deployments = [p for p, o in objects if o.get("kind") == "Deployment"]
if len(deployments) != 1 or deployments[0] not in valid:
    print(f"FAIL deployment, service and pdb properties: not checked: {KDIR} needs one Deployment"
          " that passes its schema (see above)")
    failures += 1
    object_checks = []
for name, fn in object_checks + [("kustomization lists the manifests", c_kustomization)]:
    check(name, fn)
if subprocess.run(["sh", "-c", "command -v kubectl"], capture_output=True).returncode == 0:
    check("kustomize build (kubectl kustomize)", c_kustomize_build)
else:
    print("SKIP kustomize build: kubectl is not installed (kustomization.yaml was checked above)")

# ---------------------------------------------------------------- systemd
SDIR = "deploy/systemd"


def read_unit(path):
    """{section: {key: [values]}}; a trailing backslash continues a line; # and ; comment."""
    with open(path) as f:
        text = f.read()
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s[0] in "#;"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        lines.append(buf + s)
        buf = ""
    sections, cur = {}, None
    for s in lines:
        if s.startswith("[") and s.endswith("]"):
            cur = sections.setdefault(s[1:-1], {})
            continue
        need(cur is not None and "=" in s, f"{path}: cannot read {s!r}")
        k, v = s.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def last(unit, section, key):
    v = unit.get(section, {}).get(key)
    return v[-1] if v else None


YES, NO = {"yes", "true", "on", "1"}, {"no", "false", "off", "0"}
SERVICE_WANTS = [
    ("Service", "Type", "notify"),
    ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
    ("Service", "Restart", "on-failure"),
    ("Service", "DynamicUser", YES),
    ("Service", "ProtectSystem", "strict"),
    ("Service", "ProtectHome", YES),
    ("Service", "PrivateTmp", YES),
    ("Service", "NoNewPrivileges", YES),
    ("Service", "AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
    ("Service", "CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
    ("Service", "LimitNOFILE", "1048576"),
    ("Service", "LogsDirectory", "failover"),
    ("Service", "ConfigurationDirectory", "failover"),
    ("Service", "RestrictAddressFamilies", {"AF_INET AF_INET6 AF_UNIX"}),
    ("Install", "WantedBy", "multi-user.target"),
]
SOCKET_WANTS = [
    ("Socket", "ReusePort", NO),
    ("Install", "WantedBy", "sockets.target"),
]


def wants(unit, table):
    for section, key, want in table:
        got = last(unit, section, key)
        if key == "RestrictAddressFamilies" and got is not None:
            got = " ".join(sorted(got.split()))
            want = {" ".join(sorted(w.split())) for w in want}
        ok = got in want if isinstance(want, set) else got == want
        need(ok, f"[{section}] {key}={got}, want {want if isinstance(want, str) else '|'.join(sorted(want))}")


def systemd_config():
    with open(f"{SDIR}/config.yaml") as f:
        cfg = yaml.load(f, Loader=UniqueKeys)
    need(isinstance(cfg, dict), f"{SDIR}/config.yaml is not a YAML mapping")
    return cfg


def c_service_unit():
    u = read_unit(f"{SDIR}/failover.service")
    wants(u, SERVICE_WANTS)
    start = last(u, "Service", "ExecStart") or ""
    need(start.split()[:1] == ["/usr/local/bin/failover"], f"ExecStart={start}: want /usr/local/bin/failover ...")
    conf = f"/etc/{last(u, 'Service', 'ConfigurationDirectory')}/config.yaml"
    need(re.search(rf"--config[= ]{re.escape(conf)}(\s|$)", start), f"ExecStart={start}: want --config {conf}")
    need(last(u, "Service", "WatchdogSec"), "WatchdogSec is not set")
    dog = seconds(last(u, "Service", "WatchdogSec"), "WatchdogSec")
    need(0 < dog <= 60, f"WatchdogSec={last(u, 'Service', 'WatchdogSec')}: want a watchdog of at most a minute")
    return f"Type=notify, WatchdogSec={last(u, 'Service', 'WatchdogSec')}, reload by SIGHUP, DynamicUser, ProtectSystem=strict"


def c_service_stop():
    u = read_unit(f"{SDIR}/failover.service")
    stop = last(u, "Service", "TimeoutStopSec")
    need(stop, "TimeoutStopSec is not set")
    total = drain(systemd_config(), f"{SDIR}/config.yaml")
    need(seconds(stop, "TimeoutStopSec") > total, f"TimeoutStopSec={stop} is not above shutdown_delay + shutdown_timeout = {total:g}s")
    return f"TimeoutStopSec={stop} > {total:g}s"


def c_service_paths():
    u = read_unit(f"{SDIR}/failover.service")
    log = systemd_config().get("access_log")
    logs = f"/var/log/{last(u, 'Service', 'LogsDirectory')}/"
    need(log is None or log == "-" or str(log).startswith(logs), f"access_log {log} is outside LogsDirectory ({logs}): not writable")
    return f"access_log {log} in LogsDirectory"


def c_socket_unit():
    s = read_unit(f"{SDIR}/failover.socket")
    wants(s, SOCKET_WANTS)
    streams = s.get("Socket", {}).get("ListenStream", [])
    need(len(streams) == 1, f"{len(streams)} ListenStream= lines, want one")
    listen = systemd_config().get("listen", "0.0.0.0:8080")
    need(port_of(streams[0], "ListenStream") == port_of(listen, "listen"),
         f"ListenStream={streams[0]} and listen {listen} of {SDIR}/config.yaml differ")
    return f"ListenStream={streams[0]} = the config's listen port, ReusePort=no"


for name, fn in [
    ("systemd failover.service directives", c_service_unit),
    ("systemd stop timeout above the drain", c_service_stop),
    ("systemd access log is writable", c_service_paths),
    ("systemd failover.socket directives", c_socket_unit),
]:
    check(name, fn)

# ---------------------------------------------------------------- files for the commands
# The configs as the proxy would see them, with the paths the image or the unit provide
# pointed at their sources: `COPY --from=builder /src/X DEST` in the Dockerfile; the
# ConfigMap's keys for its mount; LogsDirectory for the access log.
def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


root = os.getcwd()
image = [(dest.rstrip("/"), f"{root}/{src}") for src, dest in
         re.findall(r"COPY\s+--from=builder\s+/src/(\S+)\s+(\S+)", dockerfile())]


def remap(text, prefixes):
    """The config with every path (or file:// URL) under an old prefix moved to the new one."""
    def walk(v):
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            for old, new in prefixes:
                v = re.sub(rf"^(file://)?{re.escape(old)}(?=/|$)", lambda m: (m[1] or "") + new, v)
        return v
    return yaml.safe_dump(walk(yaml.load(text, Loader=UniqueKeys)), sort_keys=False)


try:
    cm, key, path, mount = config_source()
    etc = f"{tmp}/kubernetes/etc"
    for k, v in cm.get("data", {}).items():
        write(f"{etc}/{k}", v)
    write(f"{tmp}/kubernetes/config.yaml", remap(cm["data"][key], image + [(mount.rstrip("/"), etc)]))
except Exception:
    pass  # reported above: the binary check then says the file is missing
try:
    with open(f"{SDIR}/config.yaml") as f:
        text = f.read()
    u = read_unit(f"{SDIR}/failover.service")
    logs = f"/var/log/{last(u, 'Service', 'LogsDirectory')}"
    write(f"{tmp}/systemd/config.yaml", remap(text, image + [(logs, f"{tmp}/systemd/log"), ("/etc/failover", f"{root}/{SDIR}")]))
    os.makedirs(f"{tmp}/systemd/log", exist_ok=True)
except Exception:
    pass  # reported above
sys.exit(min(failures, 100))
PY
  failed=$((failed + rc))
fi

# ---- The configs, as the proxy itself reads them.
help=$("$bin" --help 2>&1 || true)
for which in kubernetes:configmap.yaml systemd:config.yaml; do
  label="config deploy/${which%%:*}/${which#*:}"
  which=${which%%:*}
  file=$tmp/$which/config.yaml
  if [[ ! -x $bin ]]; then
    fail "$label: the binary $bin is missing: build it first (cargo build --profile ci)"
  elif [[ $help != *--check-config* ]]; then
    echo "SKIP $label: $bin has no --check-config yet"
  elif [[ ! -s $file ]]; then
    fail "$label: the config could not be extracted (see above)"
  elif out=$(timeout 20 "$bin" --config "$file" --check-config 2>&1); then
    pass "$label: accepted by $bin --check-config"
  else
    rc=$?
    out=${out//$file/${label#config }}
    fail "$label: $bin --check-config exit $rc: $(one_line <<<"$out")"
  fi
done

# ---- systemd's own checks of the unit files. verify needs ExecStart's program to exist:
# there, the binary under test.
units=$tmp/units
mkdir -p "$units"
sed "s#^ExecStart=/usr/local/bin/failover\b#ExecStart=$bin#" deploy/systemd/failover.service >"$units/failover.service"
cp deploy/systemd/failover.socket "$units/"
if ! command -v systemd-analyze >/dev/null 2>&1; then
  fail "systemd-analyze verify: systemd-analyze is not installed:" \
    "apt-get install -y --no-install-recommends systemd (.ci/run installs it)"
elif [[ ! -x /bin/kill ]]; then
  fail "systemd-analyze verify: /bin/kill (ExecReload=) is missing on this machine:" \
    "apt-get install -y --no-install-recommends procps"
else
  # verify exits 0 after warning about an unknown key or a value it cannot parse, so any
  # output at all is a failure.
  rc=0
  out=$(systemd-analyze verify --man=no "$units/failover.service" "$units/failover.socket" 2>&1) || rc=$?
  if ((rc == 0)) && [[ -z $out ]]; then
    pass "systemd-analyze verify deploy/systemd/failover.service deploy/systemd/failover.socket"
  else
    fail "systemd-analyze verify (exit $rc): $(one_line <<<"${out//$units\//}")"
  fi
  rc=0
  out=$(systemd-analyze security --offline=yes --no-pager --threshold=20 "$units/failover.service" 2>&1) || rc=$?
  level=$(grep -o 'Overall exposure level.*' <<<"$out" | sed 's/ *[^ -~]*$//' || true)
  if ((rc == 0)) && [[ -n $level ]]; then
    pass "systemd-analyze security: ${level#Overall exposure level for } (at most 2.0)"
  else
    fail "systemd-analyze security (exit $rc): ${level:-$(one_line <<<"$out")}; want an exposure of at most 2.0"
  fi
fi

if ((failed)); then
  echo "validate.sh: FAILED (failing checks: $failed)"
  exit 1
fi
echo "validate.sh: all checks passed"
