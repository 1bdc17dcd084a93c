"""deploy/ checked offline, as far as a machine without a Docker engine or a cluster can: the
Kubernetes manifests against the 1.33 API schemas (strict: an unknown field fails) and against
each other (claims, ConfigMaps, selectors, ports); the compose file against the Compose
specification's schema; the Dockerfiles by hadolint and by Docker's own parser; and the parts
that run embedsvc (serve.toml, the HEALTHCHECK command, the build's weights check, the Grafana
queries) against a real server."""
from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import dockerfile  # Docker's own (BuildKit) Dockerfile parser
import kubernetes_validate
import pytest
import yaml

from conftest import TINY

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
K8S_VERSION = "1.33.0"


def k8s_docs() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for doc in yaml.safe_load_all(p.read_text()) if doc]


def by_kind(kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for _, d in k8s_docs() if d["kind"] == kind}


def pod_specs() -> dict[str, dict]:
    return {name: d["spec"]["template"]["spec"] for _, d in k8s_docs()
            if d["kind"] in ("Deployment", "Job") for name in [d["metadata"]["name"]]}


# -- Kubernetes ----------------------------------------------------------------------------------
def test_every_manifest_is_valid_for_kubernetes_1_33():
    docs = k8s_docs()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "Service", "ConfigMap", "Job",
                                            "PersistentVolumeClaim", "HorizontalPodAutoscaler"}
    for name, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    broken = copy.deepcopy(by_kind("Deployment")["embedsvc-writer"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"grpc": {"port": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does reject a typo
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_the_manifests_refer_to_each_other_correctly():
    claims, maps = by_kind("PersistentVolumeClaim"), by_kind("ConfigMap")
    for name, spec in pod_specs().items():
        for v in spec["volumes"]:
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, (name, v)
            if "configMap" in v:
                assert v["configMap"]["name"] in maps, (name, v)
        for c in spec["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", [])}
            assert mounts <= {v["name"] for v in spec["volumes"]}, (name, mounts)
    deployments = by_kind("Deployment")
    for name, svc in by_kind("Service").items():
        chosen = [d for d in deployments.values() if svc["spec"]["selector"].items()
                  <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(chosen) == 1, f"Service {name} selects {len(chosen)} Deployments"
        ports = {p["name"] for c in chosen[0]["spec"]["template"]["spec"]["containers"]
                 for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports
    for d in deployments.values():
        assert d["spec"]["selector"]["matchLabels"].items() <= \
            d["spec"]["template"]["metadata"]["labels"].items()
    hpa = by_kind("HorizontalPodAutoscaler")["embedsvc-reader"]
    assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    assert hpa["spec"]["metrics"][1]["pods"]["metric"]["name"] == "embedsvc_queue_depth"


def test_servers_are_probed_over_http_health_and_run_as_their_role():
    from embedsvc.service.config import ServeConfig

    config = ServeConfig.load(DEPLOY / "serve.toml")
    roles = {}
    for name, d in by_kind("Deployment").items():
        spec = d["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] > 0
        (c,) = spec["containers"]
        for probe, path in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"),
                            ("livenessProbe", "/healthz")):
            assert c[probe]["httpGet"] == {"path": path, "port": config.http_port}, (name, probe)
        assert {p["containerPort"] for p in c["ports"]} == {config.port, config.metrics_port,
                                                            config.http_port}
        args = c["args"]
        assert args[:3] == ["serve", "--config", "/etc/embedsvc/serve.toml"]
        roles[name] = args[args.index("--role") + 1]
        data = next(m for m in c["volumeMounts"] if m["mountPath"] == config.data_dir)
        assert data.get("readOnly", False) == (roles[name] == "reader")
    assert sorted(roles.values()) == ["reader", "writer"]
    writer = by_kind("Deployment")["embedsvc-writer"]["spec"]
    assert writer["replicas"] == 1 and writer["strategy"]["type"] == "Recreate"


def test_the_configmap_holds_deploy_serve_toml_and_the_server_reads_it():
    from embedsvc.service.config import ServeConfig

    text = (DEPLOY / "serve.toml").read_text()
    assert by_kind("ConfigMap")["embedsvc-config"]["data"]["serve.toml"] == text
    for role in ("writer", "reader"):
        config = ServeConfig.load(DEPLOY / "serve.toml", role=role)
        assert config.role == role and config.host == "0.0.0.0" and config.metrics_port


# -- compose and Prometheus -----------------------------------------------------------------------
def compose_errors(doc: dict) -> list[str]:
    import jsonschema

    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_the_compose_file_follows_the_compose_specification():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose_errors(doc) == []
    typo = copy.deepcopy(doc)
    typo["services"]["reader"]["healthcheck"]["intervall"] = "5s"
    assert compose_errors(typo)  # the schema does reject a typo
    services = doc["services"]
    assert set(services) == {"writer", "reader", "prometheus", "grafana"}
    assert (DEPLOY.parent / services["writer"]["build"]["dockerfile"]).is_file()
    for s in services.values():
        for volume in s.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(".") or (DEPLOY / source).exists(), volume
    assert services["reader"]["volumes"] == ["embedsvc-data:/data:ro"]
    assert services["writer"]["command"][-2:] == ["--role", "writer"]
    assert services["reader"]["command"][-2:] == ["--role", "reader"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {"writer:9100", "reader:9100"}


# -- Dockerfiles ----------------------------------------------------------------------------------
DOCKERFILES = ["Dockerfile", "Dockerfile.cuda"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_a_dockerfile_is_multi_stage_non_root_and_copies_what_exists(name):
    commands = dockerfile.parse_file(str(DEPLOY / name))
    stages = [i for i, c in enumerate(commands) if c.cmd == "FROM"]
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the image"
    final = commands[stages[-1]:]
    users = [c.value[0] for c in final if c.cmd == "USER"]
    assert users and users[-1] not in ("root", "0")
    health = [c for c in final if c.cmd == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].value[:2] == ("CMD", "embedsvc") and \
        "health" in health[0].value
    for c in commands:
        if c.cmd == "COPY" and not any(f.startswith("--from") for f in c.flags):
            for source in c.value[:-1]:
                assert (DEPLOY.parent / source).exists(), f"{name}: COPY {source}: no such file"
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (the dev extra has it on x86-64)")
    linted = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info",
                             str(DEPLOY / name)], capture_output=True, text=True, timeout=60)
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_the_build_checks_for_weights_that_this_install_has():
    for name in DOCKERFILES:
        runs = [c.value[0] for c in dockerfile.parse_file(str(DEPLOY / name)) if c.cmd == "RUN"]
        check = next(r.split("&&", 1)[1].strip() for r in runs if "embedsvc models" in r)
        bin_dir = Path(sys.executable).parent
        ran = subprocess.run(["bash", "-o", "pipefail", "-c", check], capture_output=True,
                             text=True, timeout=120, env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        assert ran.returncode == 0, (check, ran.stderr)


# -- against a real server: the health check command and the dashboard's metrics ----------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from embedsvc.service.config import ServeConfig
    from embedsvc.service.grpc_server import Server

    srv = Server(ServeConfig(port=0, data_dir=str(tmp_path_factory.mktemp("deploy")),
                             default_backbone=TINY, metrics_port=0, role="writer")).start()
    yield srv
    srv.stop(grace=5)


def test_the_healthcheck_command_passes_on_a_serving_server_only(server):
    (health,) = [c for c in dockerfile.parse_file(str(DEPLOY / "Dockerfile"))
                 if c.cmd == "HEALTHCHECK"]
    argv = list(health.value[1:])
    assert argv[argv.index("--server") + 1] == "127.0.0.1:50051"
    cmd = [sys.executable, "-m", *argv]
    cmd[cmd.index("--server") + 1] = f"127.0.0.1:{server.port}"
    ok = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout) == {"status": "SERVING"}, ok.stderr
    cmd[cmd.index("--server") + 1] = "127.0.0.1:1"  # nothing listens
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=60).returncode != 0


def test_every_dashboard_query_names_a_metric_the_server_exports(server):
    import numpy as np

    from embedsvc.client import Client

    with Client(f"127.0.0.1:{server.port}") as c:  # so that labelled series exist too
        c.upsert("docs", [{"vector": np.ones(256, np.float32)}], timeout=60)
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                  timeout=30).read().decode()
    exported = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        exported |= {name, f"{name}_total"} if kind == "counter" else {name}
        if kind == "histogram":
            exported |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    dashboard = json.loads((DEPLOY / "grafana/dashboards/embedsvc.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in re.findall(r"\bembedsvc_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    assert "embedsvc_queue_depth" in used and "embedsvc_snapshot_seq" in used
