#!/usr/bin/python3
"""Checks every deployment manifest under deploy/ against the product.

No cluster, kustomize or container engine runs here, so this renders the
Kubernetes base and each overlay itself (resources, strategic-merge patches by
kind and name, image replacements: the only kustomize features deploy/k8s
uses, and the kustomizations are checked to use no other), reads the Kubeflow
TFJob and the Slurm script, and checks:

  * every flag a manifest makes a program take exists in that program's
    --help: the command lines come from running the real entrypoint,
    deploy/bin/plexus-launch, in dry-run mode with each pod's environment and
    the cluster spec of its ConfigMap (or the TF_CONFIG TFJob would inject, or
    the spec the Slurm script writes);
  * ports agree: cluster spec, containerPort, Service port and targetPort,
    probe ports and --admin_port;
  * names and labels agree: Service selectors pick the pods of their
    workload, StatefulSet serviceName and Job subdomain are headless Services,
    the cluster spec names pods by their stable DNS names, and has as many ps
    and worker entries as there are replicas;
  * termination grace exceeds --shutdown_grace_s; every container requests
    CPU and memory; GPU workers request GPUs;
  * the TF_CONFIG shape is what the daemons parse: plexus-launch starts a real
    coordinator and a real PS from the TFJob's TF_CONFIG (they serve, and exit
    0 on SIGTERM), and a broken TF_CONFIG exits 1 (permanent for TFJob's
    ExitCode policy).

YAML is read with PyYAML. Usage: check_manifests.py REPO_DIR BIN_DIR
"""

import copy
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
BIN = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else os.path.join(
    REPO, "build", "bin")
DEPLOY = os.path.join(REPO, "deploy")
LAUNCH = os.path.join(DEPLOY, "bin", "plexus-launch")
# Where the images install the launcher and the binaries (deploy/docker).
IMAGE_BIN = "/opt/plexus/bin"
# The worker program the manifests run; written by the examples issue.
WORKER_PROGRAM = "ctr_example"
TIMEOUT_S = 30


# ---------------------------------------------------------------- rendering

def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def merge(base, patch):
    """A strategic merge patch as far as deploy/k8s needs it: maps merge
    recursively; lists of maps that all have a "name" merge by name; any other
    list (and any scalar) is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and
            all(isinstance(x, dict) and "name" in x for x in base + patch)):
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            for i, b in enumerate(out):
                if b["name"] == p["name"]:
                    out[i] = merge(b, p)
                    break
            else:
                out.append(copy.deepcopy(p))
        return out
    if (isinstance(base, list) and isinstance(patch, list) and
            all(isinstance(x, dict) and "metadata" in x for x in base + patch)):
        # volumeClaimTemplates merge by metadata.name.
        out = [copy.deepcopy(x) for x in base]
        for p in patch:
            for i, b in enumerate(out):
                if b["metadata"]["name"] == p["metadata"]["name"]:
                    out[i] = merge(b, p)
                    break
            else:
                out.append(copy.deepcopy(p))
        return out
    return copy.deepcopy(patch)


def key(obj):
    return (obj["kind"], obj["metadata"]["name"])


def render(kdir):
    """Renders the kustomization in `kdir` into {(kind, name): object}."""
    kpath = os.path.join(kdir, "kustomization.yaml")
    (k,) = load_yaml_docs(kpath)
    unknown = set(k) - {"apiVersion", "kind", "resources", "patches",
                        "images"}
    if unknown:
        raise AssertionError(f"{kpath}: kustomize features this check does "
                             f"not render: {sorted(unknown)}")
    objects = {}
    for r in k.get("resources", []):
        path = os.path.normpath(os.path.join(kdir, r))
        if os.path.isdir(path):
            objects.update(render(path))
        else:
            for d in load_yaml_docs(path):
                if key(d) in objects:
                    raise AssertionError(f"{path}: duplicate {key(d)}")
                objects[key(d)] = d
    for p in k.get("patches", []):
        if set(p) - {"path"}:
            raise AssertionError(f"{kpath}: only patches by path are rendered")
        for d in load_yaml_docs(os.path.join(kdir, p["path"])):
            if key(d) not in objects:
                raise AssertionError(
                    f"{kdir}/{p['path']}: patches {key(d)}, which the base "
                    "does not have")
            objects[key(d)] = merge(objects[key(d)], d)
    images = {i["name"]: i for i in k.get("images", [])}
    for obj in objects.values():
        for c in containers(obj):
            i = images.get(c["image"])
            if i:
                c["image"] = i.get("newName", i["name"]) + (
                    ":" + i["newTag"] if "newTag" in i else "")
    return objects


def pod_spec(obj):
    if obj["kind"] in ("StatefulSet", "Job", "Deployment"):
        return obj["spec"]["template"]["spec"]
    return None


def containers(obj):
    spec = pod_spec(obj)
    return spec["containers"] if spec else []


# ------------------------------------------------------------ the programs

_help_cache = {}


def flags_of(program):
    """The flag names in `program --help` (gflags prints "  --name (...)")."""
    if program not in _help_cache:
        p = subprocess.run([program, "--help"], capture_output=True,
                           text=True, timeout=TIMEOUT_S)
        names = set(re.findall(r"^  --([A-Za-z0-9_]+) \(",
                               p.stdout + p.stderr, re.M))
        if not names:
            raise AssertionError(f"{program} --help listed no flags")
        _help_cache[program] = names
    return _help_cache[program]


def launch(env, args, dry_run=True):
    """Runs plexus-launch with `env` (on top of a clean one) in dry-run mode
    and returns (exit code, argv it would exec, stderr)."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PLEXUS_BIN_DIR": BIN}
    full.update(env)
    if dry_run:
        full["PLEXUS_LAUNCH_DRY_RUN"] = "1"
    p = subprocess.run([LAUNCH] + list(args), env=full, capture_output=True,
                       text=True, timeout=TIMEOUT_S)
    return p.returncode, p.stdout.splitlines(), p.stderr


def flag_value(argv, name):
    """The last --name=value in argv (gflags: the last one wins)."""
    value = None
    for a in argv:
        if a.startswith(f"--{name}="):
            value = a.split("=", 1)[1]
    return value


class ProgramCheck:
    """Checks a command line against its program's --help."""

    skipped = []

    @classmethod
    def check(cls, test, argv, where):
        program = argv[0]
        name = os.path.basename(program)
        test.assertTrue(program.startswith(BIN + "/"),
                        f"{where}: runs {program}, not a Plexus binary")
        if not os.path.exists(program):
            if name == WORKER_PROGRAM:
                cls.skipped.append(f"{where}: {name} is not built yet; its "
                                   "flags are not checked")
                return
            test.fail(f"{where}: {program} does not exist")
        known = flags_of(program)
        for a in argv[1:]:
            test.assertTrue(a.startswith("--"), f"{where}: argument {a!r} is "
                            "not a --flag")
            flag = a[2:].split("=", 1)[0]
            if flag not in known:
                test.fail(f"{where}: {name} has no --{flag} (in "
                          f"{' '.join(argv)})")


# ------------------------------------------------------------------ helpers

def container_env(c, index):
    """The container's environment as the kubelet would set it, with `index`
    for the pod-index label / completion-index annotation."""
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            if path in ("metadata.labels['apps.kubernetes.io/pod-index']",
                        "metadata.annotations['batch.kubernetes.io/"
                        "job-completion-index']"):
                env[e["name"]] = str(index)
            else:
                raise AssertionError(f"unexpected fieldRef {path}")
    return env


def named_port(c, name):
    for p in c.get("ports", []):
        if p["name"] == name:
            return p["containerPort"]
    raise AssertionError(f"container {c['name']} has no port named {name}")


def probe_port(c, probe):
    port = probe["httpGet"]["port"]
    return named_port(c, port) if isinstance(port, str) else port


def split_address(address):
    host, _, port = address.rpartition(":")
    return host, int(port)


def overlays():
    root = os.path.join(DEPLOY, "k8s", "overlays")
    return sorted(os.path.join(root, d) for d in os.listdir(root))


def run_daemon(test, task_env, tmp, name):
    """Starts the real daemon through plexus-launch from `task_env` (on
    a free port: --port=0 after the spec's port wins), waits until it
    serves, SIGTERMs it and returns its exit code."""
    port_file = os.path.join(tmp, name + ".port")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PLEXUS_BIN_DIR": BIN,
           "PLEXUS_STATE_DIR": os.path.join(tmp, name),
           "PLEXUS_LISTEN_HOST": "127.0.0.1"}
    env.update(task_env)
    log = open(os.path.join(tmp, name + ".log"), "w+")
    p = subprocess.Popen([LAUNCH, "--port=0", "--admin_port=-1",
                          "--port_file=" + port_file,
                          "--shutdown_grace_s=1"],
                         env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not os.path.exists(port_file):
            if p.poll() is not None:
                log.seek(0)
                test.fail(f"{name} exited {p.returncode}: {log.read()}")
            test.assertLess(time.monotonic(), deadline,
                            f"{name} never wrote its port")
            time.sleep(0.02)  # polling interval, not synchronisation
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout=TIMEOUT_S)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()


# -------------------------------------------------------------------- tests

class KubernetesTest(unittest.TestCase):

    def variants(self):
        dirs = [os.path.join(DEPLOY, "k8s", "base")] + overlays()
        self.assertGreaterEqual(len(dirs), 3, "base and two overlays")
        return [(os.path.relpath(d, DEPLOY), render(d)) for d in dirs]

    def test_overlays_small_and_large_exist(self):
        names = [os.path.basename(d) for d in overlays()]
        self.assertIn("small", names)
        self.assertIn("large", names)

    def check_variant(self, where, objs):
        by_kind = {}
        for (kind, _), o in objs.items():
            by_kind.setdefault(kind, []).append(o)
        services = {o["metadata"]["name"]: o for o in by_kind["Service"]}
        configmaps = {o["metadata"]["name"]: o
                      for o in by_kind.get("ConfigMap", [])}
        (coord,) = [o for o in by_kind["StatefulSet"]
                    if o["metadata"]["name"].endswith("-coordinator")]
        (ps,) = [o for o in by_kind["StatefulSet"]
                 if o["metadata"]["name"].endswith("-ps")]
        (workers,) = [o for o in by_kind["Job"]
                      if o["metadata"]["name"].endswith("-worker")]
        (driver,) = [o for o in by_kind["Job"]
                     if o["metadata"]["name"].endswith("-driver")]

        # Labels: selectors pick their own pods, every object is labelled.
        for o in objs.values():
            self.assertEqual(o["metadata"].get("labels", {}).get(
                "app.kubernetes.io/name"), "plexus",
                f"{where}: {key(o)} lacks app.kubernetes.io/name=plexus")
        workloads = [coord, ps, workers, driver]
        for o in workloads:
            labels = o["spec"]["template"]["metadata"]["labels"]
            sel = o["spec"].get("selector", {}).get("matchLabels", {})
            for k, v in sel.items():
                self.assertEqual(labels.get(k), v, f"{where}: {key(o)} "
                                 "selector does not match its pods")
        for name, svc in services.items():
            picked = [o for o in workloads if all(
                o["spec"]["template"]["metadata"]["labels"].get(k) == v
                for k, v in svc["spec"]["selector"].items())]
            self.assertEqual(len(picked), 1, f"{where}: Service {name} "
                             f"selects {len(picked)} workloads")

        # Stable names: the headless Services the pods' DNS names need.
        for o, svc_name in ((coord, coord["spec"]["serviceName"]),
                            (ps, ps["spec"]["serviceName"]),
                            (workers, pod_spec(workers).get("subdomain"))):
            self.assertIn(svc_name, services, f"{where}: {key(o)} names "
                          f"Service {svc_name}, which does not exist")
            self.assertEqual(services[svc_name]["spec"].get("clusterIP"),
                             "None", f"{where}: {svc_name} is not headless")
        self.assertEqual(coord["spec"]["replicas"], 1)
        self.assertEqual(workers["spec"]["completionMode"], "Indexed")
        self.assertEqual(workers["spec"]["completions"],
                         workers["spec"]["parallelism"],
                         f"{where}: every worker runs at once")
        self.assertEqual(pod_spec(workers)["restartPolicy"], "Never",
                         "podFailurePolicy needs restartPolicy Never")
        codes = {r["action"]: r["onExitCodes"]["values"]
                 for r in workers["spec"]["podFailurePolicy"]["rules"]
                 if "onExitCodes" in r}
        self.assertEqual(codes.get("FailJob"), [1], "exit 1 is permanent")
        self.assertIn(143, codes.get("Ignore", []), "143 is a SIGTERM drain")
        for o in (coord, ps):
            claims = [t["metadata"]["name"]
                      for t in o["spec"].get("volumeClaimTemplates", [])]
            mounts = {m["name"]: m["mountPath"]
                      for m in containers(o)[0]["volumeMounts"]}
            self.assertEqual(len(claims), 1, f"{where}: {key(o)} needs one "
                             "persistent volume per pod")
            self.assertIn(claims[0], mounts)
            env = container_env(containers(o)[0], 0)
            self.assertEqual(mounts[claims[0]], env["PLEXUS_STATE_DIR"],
                             f"{where}: {key(o)} data is not on its volume")

        # The cluster spec, from the ConfigMap every container mounts.
        spec_text = None
        for o in workloads:
            spec = pod_spec(o)
            vols = {v["name"]: v for v in spec.get("volumes", [])}
            (c,) = spec["containers"]
            env = container_env(c, 0)
            path = env["PLEXUS_CLUSTER_SPEC"]
            mount = [m for m in c["volumeMounts"]
                     if path.startswith(m["mountPath"] + "/")]
            self.assertEqual(len(mount), 1, f"{where}: {path} is not mounted")
            cm = vols[mount[0]["name"]]["configMap"]["name"]
            self.assertIn(cm, configmaps, f"{where}: no ConfigMap {cm}")
            text = configmaps[cm]["data"][os.path.basename(path)]
            self.assertTrue(spec_text is None or spec_text == text,
                            f"{where}: pods read different cluster specs")
            spec_text = text
        cluster = json.loads(spec_text)
        self.assertEqual(set(cluster), {"chief", "ps", "worker"})
        self.assertEqual(len(cluster["ps"]), ps["spec"]["replicas"],
                         f"{where}: ps entries != plexus-ps replicas")
        self.assertEqual(len(cluster["worker"]), workers["spec"]["completions"],
                         f"{where}: worker entries != worker completions")
        for role, o, svc in (
                ("chief", coord, coord["spec"]["serviceName"]),
                ("ps", ps, ps["spec"]["serviceName"]),
                ("worker", workers, pod_spec(workers)["subdomain"])):
            (c,) = containers(o)
            grpc = named_port(c, "grpc")
            sport = {p["name"]: p for p in services[svc]["spec"]["ports"]}
            self.assertEqual(sport["grpc"]["port"], grpc,
                             f"{where}: Service {svc} grpc port")
            self.assertIn(sport["grpc"]["targetPort"], ("grpc", grpc))
            for i, address in enumerate(cluster[role]):
                host, port = split_address(address)
                self.assertEqual(host, f"{o['metadata']['name']}-{i}.{svc}",
                                 f"{where}: {role} {i} is not the pod's "
                                 "stable DNS name")
                self.assertEqual(port, grpc, f"{where}: {role} {i} port")

        with tempfile.TemporaryDirectory() as tmp:
            spec_file = os.path.join(tmp, "cluster_spec.json")
            with open(spec_file, "w") as f:
                f.write(spec_text)
            for role, o in (("chief", coord), ("ps", ps), ("worker", workers)):
                (c,) = containers(o)
                self.assertEqual(c["command"], [IMAGE_BIN + "/plexus-launch"])
                n = len(cluster[role])
                for index in sorted({0, n - 1}):
                    env = container_env(c, index)
                    self.assertEqual(env["PLEXUS_TASK_TYPE"], role)
                    env["PLEXUS_CLUSTER_SPEC"] = spec_file
                    rc, argv, err = launch(env, c.get("args", []))
                    at = f"{where}: {role} {index}"
                    self.assertEqual(rc, 0, f"{at}: plexus-launch: {err}")
                    ProgramCheck.check(self, argv, at)
                    self.assertEqual(int(flag_value(argv, "port") or
                                         split_address(
                                             cluster[role][index])[1]),
                                     named_port(c, "grpc"))
                    if role == "ps":
                        self.assertEqual(flag_value(argv, "shard"), str(index))
                    if role == "worker":
                        self.assertEqual(flag_value(argv, "task_index"),
                                         str(index))
                        self.assertEqual(flag_value(argv, "ps"),
                                         ",".join(cluster["ps"]))
                        self.assertEqual(flag_value(argv, "coordinator"),
                                         cluster["chief"][0])
                    if role == "worker":
                        continue
                    # Daemons: probes on the admin port the flag sets, drain
                    # within the termination grace.
                    admin = named_port(c, "admin")
                    self.assertEqual(flag_value(argv, "admin_port"),
                                     str(admin), f"{at}: --admin_port")
                    self.assertEqual(flag_value(argv, "host"), "0.0.0.0")
                    for probe, path in (("startupProbe", "/healthz"),
                                        ("readinessProbe", "/healthz"),
                                        ("livenessProbe", "/metrics")):
                        self.assertIn(probe, c, f"{at}: no {probe}")
                        self.assertEqual(probe_port(c, c[probe]), admin)
                        self.assertEqual(c[probe]["httpGet"]["path"], path)
                    grace = float(flag_value(argv, "shutdown_grace_s"))
                    self.assertLess(grace, pod_spec(o)[
                        "terminationGracePeriodSeconds"], f"{at}: the drain "
                        "must end before the kubelet's SIGKILL")
                    ann = o["spec"]["template"]["metadata"].get(
                        "annotations", {})
                    self.assertEqual(ann.get("prometheus.io/port"),
                                     str(admin))
                    # The k8s chief is only the coordinator: the driver is
                    # its own Job (a StatefulSet would run it again).
                    self.assertEqual(argv.count("---"), 0)

            # The real coordinator accepts this spec (and serves with it).
            self.assertEqual(run_daemon(self, {
                "PLEXUS_CLUSTER_SPEC": spec_file, "PLEXUS_TASK_TYPE": "chief",
                "PLEXUS_TASK_INDEX": "0"}, tmp, "coordinator"), 0,
                f"{where}: the coordinator with this spec")

            # The driver Job: the coordinator and every shard of the spec.
            (c,) = containers(driver)
            self.assertEqual(c["command"], [IMAGE_BIN + "/plexus-launch"])
            env = container_env(c, 0)
            self.assertEqual(env["PLEXUS_TASK_TYPE"], "driver")
            env["PLEXUS_CLUSTER_SPEC"] = spec_file
            rc, argv, err = launch(env, c.get("args", []))
            self.assertEqual(rc, 0, f"{where}: driver: {err}")
            ProgramCheck.check(self, argv, f"{where}: driver")
            self.assertEqual(flag_value(argv, "coordinator"),
                             cluster["chief"][0])
            self.assertEqual(flag_value(argv, "ps"), ",".join(cluster["ps"]))
            self.assertEqual(pod_spec(driver)["restartPolicy"], "Never")
            self.assertEqual(driver["spec"]["completions"], 1)

        # Resources; GPU workers request GPUs (requests == limits).
        for o in workloads:
            for c in containers(o):
                req = c["resources"]["requests"]
                self.assertIn("cpu", req, f"{where}: {key(o)}")
                self.assertIn("memory", req, f"{where}: {key(o)}")
                gpu = c["resources"].get("limits", {}).get("nvidia.com/gpu")
                if "cuda" in c["image"]:
                    self.assertTrue(gpu, f"{where}: {key(o)} runs the CUDA "
                                    "image without a GPU")
                    self.assertEqual(req.get("nvidia.com/gpu"), gpu)
                else:
                    self.assertIsNone(gpu, f"{where}: GPU on the CPU image")
        return cluster

    def test_every_variant(self):
        seen = {}
        for where, objs in self.variants():
            with self.subTest(variant=where):
                seen[where] = self.check_variant(where, objs)
        large = seen["k8s/overlays/large"]
        small = seen["k8s/overlays/small"]
        self.assertGreater(len(large["ps"]), len(small["ps"]))
        self.assertGreater(len(large["worker"]), len(small["worker"]))


class TfJobTest(unittest.TestCase):

    def setUp(self):
        docs = load_yaml_docs(os.path.join(DEPLOY, "kubeflow", "tfjob.yaml"))
        (self.job,) = [d for d in docs if d["kind"] == "TFJob"]
        self.pvcs = {d["metadata"]["name"] for d in docs
                     if d["kind"] == "PersistentVolumeClaim"}

    def test_success_is_the_chief(self):
        # Default success policy: the TFJob succeeds when the chief (the
        # driver's exit code) does; workers never exit on their own.
        self.assertNotIn("successPolicy", self.job["spec"])
        self.assertEqual(self.job["spec"]["runPolicy"]["cleanPodPolicy"],
                         "Running")

    def test_chief_exits_with_the_drivers_code(self):
        with tempfile.TemporaryDirectory() as tmp:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            # A free port for the coordinator (the driver waits for the
            # spec's address); the "shard" is the coordinator too, which is
            # all the driver's wait needs.
            address = f"127.0.0.1:{port}"
            driver = os.path.join(tmp, "driver")
            with open(driver, "w") as f:
                f.write(f'#!/bin/sh\necho "$@" > {tmp}/driver.args\nexit 3\n')
            os.chmod(driver, 0o755)
            log_path = os.path.join(tmp, "chief.log")
            with open(log_path, "w") as log:
                p = subprocess.run(
                    [LAUNCH, "--admin_port=-1", "--shutdown_grace_s=1"],
                    env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                         "PLEXUS_BIN_DIR": BIN,
                         "PLEXUS_STATE_DIR": os.path.join(tmp, "data"),
                         "PLEXUS_LISTEN_HOST": "127.0.0.1",
                         "PLEXUS_DRIVER": driver, "PLEXUS_WAIT_S": "20",
                         "TF_CONFIG": json.dumps({
                             "cluster": {"chief": [address],
                                         "ps": [address]},
                             "task": {"type": "chief", "index": 0}})},
                    stdout=log, stderr=subprocess.STDOUT, timeout=TIMEOUT_S)
            with open(log_path) as f:
                log = f.read()
            self.assertEqual(p.returncode, 3, log)
            with open(os.path.join(tmp, "driver.args")) as f:
                self.assertEqual(f.read().split(),
                                 [f"--coordinator={address}",
                                  f"--ps={address}"])
            # The coordinator drained before the chief exited.
            self.assertIn("plexus-coordinator: stopped", log)

    def tf_configs(self):
        """TF_CONFIG per (type, index) as the training-operator writes it:
        <job>-<type>-<i>.<namespace>.svc:<tfjob-port>."""
        name = self.job["metadata"]["name"]
        specs = self.job["spec"]["tfReplicaSpecs"]
        cluster = {}
        for rtype, rspec in specs.items():
            c = rspec["template"]["spec"]["containers"][0]
            port = named_port(c, "tfjob-port")
            t = rtype.lower()
            cluster[t] = [f"{name}-{t}-{i}.default.svc:{port}"
                          for i in range(rspec["replicas"])]
        for rtype, rspec in specs.items():
            for i in range(rspec["replicas"]):
                yield rtype, i, json.dumps({
                    "cluster": cluster,
                    "task": {"type": rtype.lower(), "index": i},
                    "environment": "cloud"})

    def test_roles_and_restart_policy(self):
        specs = self.job["spec"]["tfReplicaSpecs"]
        self.assertEqual(set(specs), {"Chief", "PS", "Worker"})
        self.assertEqual(specs["Chief"]["replicas"], 1)
        for rtype, rspec in specs.items():
            self.assertEqual(rspec["restartPolicy"], "ExitCode", rtype)
            spec = rspec["template"]["spec"]
            (c,) = spec["containers"]
            self.assertEqual(c["name"], "tensorflow",
                             "TFJob finds its container by this name")
            self.assertEqual(c["command"], [IMAGE_BIN + "/plexus-launch"])
            for e in c.get("env", []):
                self.assertNotIn(e["name"], ("PLEXUS_CLUSTER_SPEC",
                                             "PLEXUS_TASK_TYPE",
                                             "PLEXUS_TASK_INDEX"),
                                 "a TFJob relies only on TF_CONFIG")
            for v in spec.get("volumes", []):
                if "persistentVolumeClaim" in v:
                    self.assertIn(v["persistentVolumeClaim"]["claimName"],
                                  self.pvcs)

    def test_flags_from_tf_config(self):
        specs = self.job["spec"]["tfReplicaSpecs"]
        for rtype, index, tf_config in self.tf_configs():
            c = specs[rtype]["template"]["spec"]["containers"][0]
            env = {e["name"]: str(e["value"]) for e in c.get("env", [])}
            env["TF_CONFIG"] = tf_config
            rc, out, err = launch(env, c.get("args", []))
            at = f"TFJob {rtype} {index}"
            self.assertEqual(rc, 0, f"{at}: {err}")
            argv, driver = (out[:out.index("---")], out[out.index("---") + 1:]
                            ) if "---" in out else (out, [])
            ProgramCheck.check(self, argv, at)
            config = json.loads(tf_config)
            # The chief runs the driver beside the coordinator: the TFJob
            # ends when the chief exits.
            self.assertEqual(bool(driver), rtype == "Chief", at)
            if driver:
                ProgramCheck.check(self, driver, at + " driver")
                self.assertEqual(flag_value(driver, "coordinator"),
                                 config["cluster"]["chief"][0])
                self.assertEqual(flag_value(driver, "ps"),
                                 ",".join(config["cluster"]["ps"]))
            own = config["cluster"][rtype.lower()][index]
            if rtype == "Worker":
                self.assertEqual(flag_value(argv, "coordinator"),
                                 config["cluster"]["chief"][0])
                self.assertEqual(flag_value(argv, "task_index"), str(index))
            else:
                self.assertEqual(flag_value(argv, "port"),
                                 own.rsplit(":", 1)[1])
            if rtype != "Worker":
                admin = named_port(c, "admin")
                self.assertEqual(flag_value(argv, "admin_port"), str(admin))
                for probe in ("startupProbe", "readinessProbe",
                              "livenessProbe"):
                    self.assertEqual(probe_port(c, c[probe]), admin)
                self.assertLess(
                    float(flag_value(argv, "shutdown_grace_s")),
                    specs[rtype]["template"]["spec"][
                        "terminationGracePeriodSeconds"])

    def test_daemons_parse_tf_config(self):
        configs = {(t, i): c for t, i, c in self.tf_configs()}
        with tempfile.TemporaryDirectory() as tmp:
            self.assertEqual(run_daemon(
                self, {"TF_CONFIG": configs[("Chief", 0)]}, tmp,
                "coordinator"), 0)
            self.assertEqual(run_daemon(
                self, {"TF_CONFIG": configs[("PS", 1)]}, tmp, "ps"), 0)

    def test_bad_tf_config_exits_1(self):
        good = json.loads(next(c for t, i, c in self.tf_configs()
                               if t == "Chief"))
        outside = copy.deepcopy(good)
        outside["task"] = {"type": "ps", "index": 99}
        evaluator = copy.deepcopy(good)
        evaluator["task"] = {"type": "evaluator", "index": 0}
        for name, text in (("not JSON", "{\"cluster\":"),
                           ("index outside the spec", json.dumps(outside)),
                           ("unknown role", json.dumps(evaluator))):
            rc, _, err = launch({"TF_CONFIG": text}, [], dry_run=False)
            self.assertEqual(rc, 1, f"plexus-launch, {name}: {err}")
        # A worker whose coordinator never answers exits 138: retryable.
        with socket.socket() as closed:
            # Bound, never listening: connections to it are refused.
            closed.bind(("127.0.0.1", 0))
            address = "127.0.0.1:%d" % closed.getsockname()[1]
            cluster = {"chief": [address], "ps": [address],
                       "worker": ["w0:2222"]}
            rc, _, err = launch({
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {
                    "type": "worker", "index": 0}}),
                "PLEXUS_WAIT_S": "1",
                "PLEXUS_WORKER": os.path.join(BIN, "plexus")}, [],
                dry_run=False)
            self.assertEqual(rc, 138, err)
            self.assertIn("did not accept connections", err)
        # The coordinator itself refuses a TF_CONFIG whose task lies outside
        # its cluster with exit 1 (permanent), whoever started it.
        with tempfile.TemporaryDirectory() as tmp:
            p = subprocess.run(
                [os.path.join(BIN, "plexus-coordinator"),
                 "--data_dir=" + tmp, "--port=0", "--admin_port=-1"],
                env={"TF_CONFIG": json.dumps(outside)}, capture_output=True,
                text=True, timeout=TIMEOUT_S)
            self.assertEqual(p.returncode, 1, p.stderr)


class SlurmTest(unittest.TestCase):
    """The sbatch script in dry-run mode on a fake allocation: the spec it
    writes, where each task goes, and the flags each task's program gets."""

    NODES = ["n1", "n2", "n3"]

    def test_spec_and_tasks(self):
        with tempfile.TemporaryDirectory() as tmp:
            # scontrol show hostnames: the fake allocation's node names.
            fake = os.path.join(tmp, "scontrol")
            with open(fake, "w") as f:
                f.write('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] || exit 2\n'
                        'echo "$3" | tr , "\\n"\n')
            os.chmod(fake, 0o755)
            env = {"PATH": tmp + ":" + os.environ.get("PATH", "/usr/bin"),
                   "SLURM_JOB_NODELIST": ",".join(self.NODES),
                   "SLURM_JOB_ID": "7", "PLEXUS_PS": "4",
                   "PLEXUS_WORKERS": "5", "PLEXUS_JOB_DIR": tmp + "/job",
                   "PLEXUS_SLURM_DRY_RUN": "1"}
            p = subprocess.run([os.path.join(DEPLOY, "slurm",
                                             "plexus.sbatch")],
                               env=env, capture_output=True, text=True,
                               timeout=TIMEOUT_S)
            self.assertEqual(p.returncode, 0, p.stderr)
            spec_file = os.path.join(tmp, "job", "cluster_spec.json")
            with open(spec_file) as f:
                cluster = json.load(f)
            self.assertEqual(len(cluster["chief"]), 1)
            self.assertEqual(len(cluster["ps"]), 4)
            self.assertEqual(len(cluster["worker"]), 5)
            everything = cluster["chief"] + cluster["ps"] + cluster["worker"]
            self.assertEqual(len(set(everything)), len(everything),
                             "two tasks on one host:port")
            steps = {}
            for line in p.stdout.splitlines():
                if not line.startswith("SLURM_HOSTFILE="):
                    continue
                words = shlex.split(line)
                hostfile = words[0].split("=", 1)[1]
                role = flag_value(words, "export").split("PLEXUS_TASK_TYPE=")[1]
                at = words.index("/opt/plexus/bin/plexus-launch")
                with open(hostfile) as f:
                    steps[role] = (f.read().split(), words[at + 1:],
                                   int(flag_value(words, "ntasks")))
            self.assertEqual(set(steps), {"chief", "ps", "worker"})
            for role, (hosts, args, ntasks) in steps.items():
                self.assertEqual(ntasks, len(cluster[role]))
                self.assertEqual(len(hosts), ntasks)
                for i, address in enumerate(cluster[role]):
                    # SLURM_PROCID i runs on line i of the hostfile, and
                    # that is the host of entry i.
                    self.assertEqual(hosts[i], split_address(address)[0])
                    rc, argv, err = launch(
                        {"PLEXUS_CLUSTER_SPEC": spec_file,
                         "PLEXUS_TASK_TYPE": role,
                         "PLEXUS_TASK_INDEX": str(i)}, args)
                    self.assertEqual(rc, 0, err)
                    ProgramCheck.check(self, argv, f"slurm {role} {i}")
                    if role != "worker":
                        self.assertEqual(flag_value(argv, "port"),
                                         str(split_address(address)[1]))
            # The coordinator accepts the spec file it wrote.
            with tempfile.TemporaryDirectory() as data:
                rc = run_daemon(self, {
                    "PLEXUS_CLUSTER_SPEC": spec_file,
                    "PLEXUS_TASK_TYPE": "chief", "PLEXUS_TASK_INDEX": "0"},
                    data, "coordinator")
                self.assertEqual(rc, 0)


class ImagesTest(unittest.TestCase):

    def test_dockerfile_uses_the_one_package_list(self):
        path = os.path.join(DEPLOY, "docker", "Dockerfile")
        with open(path) as f:
            text = f.read()
        self.assertIn("debian:bookworm", text)
        self.assertIn("deploy/packages.txt", text)
        self.assertIn("scripts/setup.sh", text,
                      "the image installs packages the way setup.sh does")
        self.assertIn(IMAGE_BIN, text)
        for target in ("cpu", "cuda"):
            self.assertRegex(text, rf"(?im)^FROM\s+\S+\s+AS\s+{target}\s*$")
        with open(os.path.join(DEPLOY, "packages.txt")) as f:
            packages = [l.split()[0] for l in f
                        if l.strip() and not l.startswith("#")]
        self.assertIn("jq", packages, "plexus-launch needs jq")
        # Packages the Dockerfile installs itself (CUDA's): none of them may
        # repeat the list.
        joined = text.replace("\\\n", " ")
        installed = set()
        for m in re.finditer(r"apt-get install([^&\n]*)", joined):
            installed |= {w for w in m.group(1).split()
                          if not w.startswith("-")}
        self.assertTrue(installed, "the CUDA stage installs the toolkit")
        self.assertFalse(installed & set(packages), "packages repeated in the "
                         "Dockerfile: the list lives in deploy/packages.txt")

if __name__ == "__main__":
    # unittest must not see our positional arguments.
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    for s in ProgramCheck.skipped:
        print("SKIPPED PART:", s)
    sys.exit(0 if result.wasSuccessful() else 1)
