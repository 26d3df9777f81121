"""deploy/kubernetes/openenv-ws.yaml, validated offline against the Kubernetes API schemas.

No cluster is involved (none can run here): ``kubernetes-validate`` ships the API's JSON schemas
and checks every manifest strictly (unknown fields are errors). The checks after that are the
ones a schema cannot make: the pieces of the topology agree with each other and with the server.
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from openenv_ws.tools.cli import build_parser

from .conftest import ROOT

MANIFEST = ROOT / "deploy" / "kubernetes" / "openenv-ws.yaml"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0")
"""The API versions checked: an older one still common, and a recent one."""


def manifests() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_the_kubernetes_api(version):
    docs = manifests()
    assert set(docs) == {"Service", "DaemonSet"}
    for kind, doc in docs.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind} is not valid for Kubernetes {version}: {exc}")


def test_a_manifest_with_a_mistake_is_refused():
    daemonset = manifests()["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"] = "8000"  # a string
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)
    daemonset = manifests()["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["terminationGracePeriod"] = 40  # no such field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_pieces_agree_with_each_other_and_with_the_server():
    docs = manifests()
    service, daemonset = docs["Service"], docs["DaemonSet"]
    pod = daemonset["spec"]["template"]
    (server,) = pod["spec"]["containers"]
    args = build_parser().parse_args(server["args"])  # the server accepts its command line

    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS record per server
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert args.cluster == service["metadata"]["name"]  # the peers are what the Service resolves to

    port = next(p for p in server["ports"] if p["name"] == "http")
    assert port["containerPort"] == port["hostPort"] == args.port  # each node serves its own server
    env = {e["name"]: e for e in server["env"]}
    assert env["OPENENV_WS_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["OPENENV_WS_ADVERTISE"]["value"] == f"ws://$(HOST_IP):{args.port}"
    assert env["OPENENV_WS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True

    assert server["readinessProbe"]["httpGet"]["path"] == "/healthz"  # 503 while draining: leaves the DNS
    assert "tcpSocket" in server["livenessProbe"]  # a draining server is alive: not restarted
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.drain_sessions + args.drain_timeout
    assert server["resources"]["requests"] and server["resources"]["limits"]["memory"]

    ipc_root = dict(args.backend_option)["ipc_root"]
    mounts = {m["name"]: m["mountPath"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    assert mounts["ipc"] == volumes["ipc"] == ipc_root  # the same path on the node and in the pod
    assert mounts["docker-socket"] == volumes["docker-socket"] == "/var/run/docker.sock"


def test_it_says_it_has_not_run_on_a_live_cluster():
    assert re.search(r"NOT YET RUN ON A LIVE CLUSTER", MANIFEST.read_text())
    assert re.search(r"not yet (been )?run on a live cluster", (ROOT / "docs" / "swarm.md").read_text(), re.I)
