"""What `helm template` renders: the layout rules of R12 and the chart's safety properties.

Client-side only. The same manifests go through `kubectl apply --dry-run=server` in
tests/integration/test_chart.py.
"""

from pathlib import Path
from typing import Any

import pytest
import yaml
from chartkit import (
    CHART,
    KEY_SECRET,
    KUBE_VERSION,
    REPO,
    WITH_KEYS,
    Render,
    by_kind,
    coalesce,
    one,
    run_helm,
    template_args,
)

from tidepool.api.v1alpha1 import GPUPool

GPUPOOL_API = "tidepool.dev/v1alpha1/GPUPool"
MONITORING_APIS = ("monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PodMonitor")


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in by_kind(docs, "Deployment")
    }


def rules_of(docs: list[dict[str, Any]], kind: str, suffix: str) -> list[dict[str, Any]]:
    return [
        r for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix) for r in d["rules"]
    ]


def allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules
    )


# ------------------------------------------------------------------------------- layout (R12)


def test_default_objects(render: Render) -> None:
    kinds = sorted(d["kind"] for d in render())
    assert kinds == sorted(
        [
            "ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding",
            "ClusterRole", "ClusterRole",  # aggregated to view/edit/admin
            "Pod",  # the `helm test` hook
            "CustomResourceDefinition", "CustomResourceDefinition", "CustomResourceDefinition",
            "CustomResourceDefinition", "CustomResourceDefinition",  # Kopf's peering
            "Deployment", "Deployment", "GPUPool", "GPUPool",
            "PodDisruptionBudget",  # the operator's: two replicas
            "Service", "Service", "Service", "ServiceAccount", "ServiceAccount",
        ]
    )  # fmt: skip


OPERATOR_ARGS = [
    "run",
    "--all-namespaces",
    "--metrics-port=9090",
    "--health-port=8080",
    "--prometheus-url=http://prometheus-operated.monitoring.svc:9090",
]


def operator_args(docs: list[dict[str, Any]]) -> list[str]:
    args = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]
    return list(args["args"])


@pytest.mark.parametrize(
    ("operator", "replicas", "peering_args"),
    [
        pytest.param(
            {},
            2,
            ["--peering=tp-tidepool-operator", "--peering-lifetime=10"],
            id="default-two-peered",
        ),
        pytest.param(
            {"replicas": 3, "peering": {"name": "tidepool.peers", "lifetime": 30}},
            3,
            ["--peering=tidepool.peers", "--peering-lifetime=30"],
            id="three-named-peering",
        ),
        pytest.param({"replicas": 1}, 1, [], id="one-standalone"),
        pytest.param(
            {"replicas": 1, "peering": {"name": "ignored"}}, 1, [], id="one-ignores-peering"
        ),
    ],
)
def test_operator_replicas_peer_and_are_recreated(
    render: Render, operator: dict[str, Any], replicas: int, peering_args: list[str]
) -> None:
    """More than one replica means Kopf's peering (one acts, the others stand by); one replica
    runs standalone. Recreate either way: old replicas stop before new ones start."""
    docs = render({"operator": operator})
    dep = one(docs, "Deployment", "-operator")
    assert dep["spec"]["replicas"] == replicas
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert operator_args(docs) == OPERATOR_ARGS + peering_args
    # The replica's peering identity comes from the pod name (tidepool run reads POD_NAME).
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in env


def test_operator_args_probes_and_ports(render: Render) -> None:
    pod = one(render(), "Deployment", "-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][: len(OPERATOR_ARGS)] == OPERATOR_ARGS
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9090, "health": 8080}
    # Kopf serves one path, /healthz, on its liveness endpoint; both probes ask it.
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["terminationGracePeriodSeconds"] == 60


def test_operator_watches_listed_namespaces(render: Render) -> None:
    docs = render(
        {"operator": {"watchNamespaces": ["team-a", "team-b"]}, "gateway": {"enabled": False}}
    )
    args = one(docs, "Deployment", "-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" not in args
    assert [a for a in args if a.startswith("--namespace")] == [
        "--namespace=team-a",
        "--namespace=team-b",
    ]
    # The watched namespaces, the release's own (SharedEngine fleets run there), and Events
    # alone in "default" (where Kopf posts the Events of cluster-scoped objects).
    roles = {r["metadata"]["namespace"]: r for r in by_kind(docs, "Role")}
    assert sorted(roles) == ["default", "team-a", "team-b", "tidepool-system"]
    assert sorted(b["metadata"]["namespace"] for b in by_kind(docs, "RoleBinding")) == sorted(roles)
    granted = {
        (res, v) for r in roles["default"]["rules"] for res in r["resources"] for v in r["verbs"]
    }
    assert granted == {("events", "create"), ("events", "patch")}
    # Namespaced powers only through the Roles; the ClusterRole keeps cluster-scoped reads.
    cluster = rules_of(docs, "ClusterRole", "-operator")
    assert not allows(cluster, "apps", "deployments", "patch")
    assert not allows(cluster, "tidepool.dev", "inferencedeployments", "watch")
    assert allows(cluster, "tidepool.dev", "gpupools", "watch")
    # Cluster-scoped kinds stay in the ClusterRole: a Role cannot grant them.
    assert allows(cluster, "tidepool.dev", "sharedengines", "watch")
    assert allows(roles["team-a"]["rules"], "apps", "deployments", "patch")
    assert allows(roles["tidepool-system"]["rules"], "apps", "deployments", "patch")


def test_gateway(render: Render) -> None:
    docs = render()
    dep = one(docs, "Deployment", "-gateway")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert container["args"] == [
        "gateway",
        "--port=8080",
        "--metrics-port=9090",
        "--all-namespaces",
        "--queue-size=100",
        "--queue-timeout=120s",
        "--max-body-size=8Mi",
        "--drain-timeout=110s",
        "--api-keys=/etc/tidepool/api-keys/api-keys.yaml",
        "--replica-service=tp-tidepool-gateway",
        "--replicas=2",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8080, "metrics": 9090}
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    svc = one(docs, "Service", "-gateway")
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    # Metrics name every tenant: a ClusterIP Service of their own, never the API Service.
    metrics = one(docs, "Service", "-gateway-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}
    ]
    assert metrics["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    "gateway",
    [
        pytest.param({"metricsPort": 8080}, id="metrics-on-the-default-api-port"),
        pytest.param({"port": 9090}, id="api-on-the-default-metrics-port"),
    ],
)
def test_gateway_metrics_on_the_api_port_fails_to_render(
    helm: str, tmp_path: Path, gateway: dict[str, int]
) -> None:
    proc = run_helm(helm, *template_args({"gateway": gateway}, tmp_path))
    assert proc.returncode != 0, "helm rendered a gateway serving metrics on its API port"
    assert "gateway.metricsPort must differ from gateway.port" in proc.stderr, proc.stderr


@pytest.mark.parametrize(
    ("api_keys", "renders"),
    [
        pytest.param({"existingSecret": ""}, False, id="no-secret-refused"),
        pytest.param({"existingSecret": "", "allowNoKeys": True}, True, id="no-keys-allowed"),
        pytest.param({"existingSecret": KEY_SECRET}, True, id="a-secret"),
    ],
)
def test_the_chart_refuses_a_gateway_without_keys_unless_allowed(
    helm: str, tmp_path: Path, api_keys: dict[str, Any], renders: bool
) -> None:
    proc = run_helm(helm, *template_args({"gateway": {"apiKeys": api_keys}}, tmp_path))
    assert (proc.returncode == 0) is renders, proc.stderr
    if not renders:
        assert "set gateway.apiKeys.existingSecret" in proc.stderr, proc.stderr
        assert "gateway.apiKeys.allowNoKeys=true" in proc.stderr, proc.stderr
        return
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    args = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(a.startswith("--api-keys=") for a in args) is bool(api_keys["existingSecret"])


def test_gateway_api_keys_from_a_secret(render: Render) -> None:
    docs = render({"gateway": {"apiKeys": {"existingSecret": "tenant-keys", "key": "keys.yaml"}}})
    pod = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert "--api-keys=/etc/tidepool/api-keys/keys.yaml" in pod["containers"][0]["args"]
    volume = next(v for v in pod["volumes"] if v["name"] == "api-keys")
    assert volume["secret"]["secretName"] == "tenant-keys"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "api-keys")
    assert mount == {"name": "api-keys", "mountPath": "/etc/tidepool/api-keys", "readOnly": True}


def test_gateway_disabled(render: Render) -> None:
    docs = render({"gateway": {"enabled": False}})
    assert not [d for d in docs if d["metadata"]["name"].endswith("-gateway")]


def test_images_have_no_registry_host_by_default(render: Render) -> None:
    images = {c["image"] for s in pod_specs(render()).values() for c in s["containers"]}
    assert images == {"tidepool/operator:0.1.0", "tidepool/gateway:0.1.0"}


def test_image_registry_digest_and_tag(render: Render) -> None:
    digest = "sha256:" + "b" * 64
    docs = render(
        {
            "imageRegistry": "registry.example.internal/",
            "operator": {"image": {"digest": digest}},
            "gateway": {"image": {"tag": "0.2.0-rc1"}},
        }
    )
    specs = pod_specs(docs)
    assert specs["tp-tidepool-operator"]["containers"][0]["image"] == (
        f"registry.example.internal/tidepool/operator@{digest}"
    )
    assert specs["tp-tidepool-gateway"]["containers"][0]["image"] == (
        "registry.example.internal/tidepool/gateway:0.2.0-rc1"
    )


# -------------------------------------------------------------------------------------- CRDs


@pytest.mark.parametrize(
    ("crds", "count", "kept"),
    [
        pytest.param({}, 5, True, id="default-installed-and-kept"),
        pytest.param({"keep": False}, 5, False, id="installed-not-kept"),
        pytest.param({"install": False}, 0, False, id="not-installed"),
    ],
)
def test_crds_gated_and_kept(render: Render, crds: dict[str, bool], count: int, kept: bool) -> None:
    found = by_kind(render({"crds": crds}), "CustomResourceDefinition")
    assert len(found) == count
    for crd in found:
        policy = (crd["metadata"].get("annotations") or {}).get("helm.sh/resource-policy")
        assert policy == ("keep" if kept else None)
    assert sorted(c["metadata"]["name"] for c in found) == sorted(
        [
            "clusterkopfpeerings.kopf.dev",
            "gpupools.tidepool.dev",
            "inferencedeployments.tidepool.dev",
            "kopfpeerings.kopf.dev",
            "sharedengines.tidepool.dev",
        ][:count]
    )


# ------------------------------------------------------------------------------------- RBAC


def test_operator_rbac_least_privilege(render: Render) -> None:
    rules = rules_of(render(), "ClusterRole", "-operator")
    for verb in ("get", "list", "watch", "patch"):
        assert allows(rules, "tidepool.dev", "inferencedeployments", verb)
    assert allows(rules, "tidepool.dev", "inferencedeployments/status", "patch")
    assert allows(rules, "tidepool.dev", "gpupools/status", "patch")
    for verb in ("get", "list", "watch", "create", "patch", "delete"):
        assert allows(rules, "apps", "deployments", verb)
        assert allows(rules, "", "services", verb)
    assert allows(rules, "", "events", "create")
    assert allows(rules, "", "nodes", "watch")
    for verb in ("create", "update", "patch", "delete", "deletecollection"):
        assert not allows(rules, "", "nodes", verb)
        assert not allows(rules, "", "pods", verb)
    assert not allows(rules, "tidepool.dev", "inferencedeployments", "delete")
    assert not allows(rules, "tidepool.dev", "inferencedeployments", "create")
    for verb in ("get", "list", "watch", "patch"):
        assert allows(rules, "tidepool.dev", "sharedengines", verb)
    assert allows(rules, "tidepool.dev", "sharedengines/status", "patch")
    assert allows(rules, "tidepool.dev", "sharedengines/finalizers", "update")
    for verb in ("create", "delete", "deletecollection"):
        assert not allows(rules, "tidepool.dev", "sharedengines", verb)


#: Kopf's peering: read and watch the peers' records, patch in its own keep-alive, and create the
#: object when missing (the operator does; Kopf never does). Never delete.
PEERING_VERBS = ["create", "get", "list", "patch", "watch"]


def peering_grants(rules: list[dict[str, Any]]) -> dict[str, list[str]]:
    """kopf.dev resource -> the verbs granted on it."""
    return {
        res: sorted(r["verbs"])
        for r in rules
        if "kopf.dev" in r["apiGroups"]
        for res in r["resources"]
    }


@pytest.mark.parametrize(
    ("operator", "cluster", "namespaced"),
    [
        pytest.param({}, {"clusterkopfpeerings": PEERING_VERBS}, {}, id="default-clusterwide"),
        pytest.param({"replicas": 1}, {}, {}, id="standalone-none"),
        pytest.param(
            {"watchNamespaces": ["team-a", "team-b"]},
            {},
            {"team-a": {"kopfpeerings": PEERING_VERBS}, "team-b": {"kopfpeerings": PEERING_VERBS}},
            id="namespaced-in-each-watched-namespace",
        ),
        pytest.param(
            {"watchNamespaces": ["team-a"], "replicas": 1}, {}, {}, id="namespaced-standalone"
        ),
    ],
)
def test_operator_peering_rbac(
    render: Render,
    operator: dict[str, Any],
    cluster: dict[str, list[str]],
    namespaced: dict[str, dict[str, list[str]]],
) -> None:
    """Kopf keeps one ClusterKopfPeering for a cluster-wide operator and a KopfPeering in each
    watched namespace otherwise; the replicas may use exactly those, and only when peered."""
    docs = render({"operator": operator, "gateway": {"enabled": False}})
    assert peering_grants(rules_of(docs, "ClusterRole", "-operator")) == cluster
    roles = {r["metadata"]["namespace"]: r["rules"] for r in by_kind(docs, "Role")}
    granted = {ns: peering_grants(rules) for ns, rules in roles.items()}
    assert {ns: g for ns, g in granted.items() if g} == namespaced


def _granted(rules: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    return sorted(
        (g, res, v)
        for r in rules
        for g in r["apiGroups"]
        for res in r["resources"]
        for v in r["verbs"]
    )


#: The gateway's namespaced rights: read models and EndpointSlices (the engines' and its own
#: Service's), create wake Events. No pods (their specs hold the engines' environment), no
#: patch on InferenceDeployments (image, args, env), no Event reads, no Secrets.
GATEWAY_NAMESPACED = (
    [("discovery.k8s.io", "endpointslices", v) for v in ("get", "list", "watch")]
    + [("tidepool.dev", "inferencedeployments", v) for v in ("get", "list", "watch")]
    + [("", "events", "create")]
)
GATEWAY_CLUSTER = [("tidepool.dev", "sharedengines", v) for v in ("get", "list", "watch")]


def test_gateway_rbac_is_read_plus_wake_events(render: Render) -> None:
    docs = render()
    assert _granted(rules_of(docs, "ClusterRole", "-gateway")) == sorted(
        GATEWAY_NAMESPACED + GATEWAY_CLUSTER
    )
    args = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--all-namespaces" in args


def test_gateway_follows_the_operators_namespace(render: Render) -> None:
    docs = render({"operator": {"watchNamespaces": ["team-a"]}})
    assert _granted(rules_of(docs, "ClusterRole", "-gateway")) == sorted(GATEWAY_CLUSTER)
    roles = [r for r in by_kind(docs, "Role") if "-gateway" in r["metadata"]["name"]]
    # The watched namespace and the release's own (SharedEngine fleets, the gateway's own
    # Service, whose slices count its replicas): the same rights in both, nowhere else.
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "tidepool-system"]
    for role in roles:
        assert _granted(role["rules"]) == sorted(GATEWAY_NAMESPACED)
    bindings = [b for b in by_kind(docs, "RoleBinding") if "-gateway" in b["metadata"]["name"]]
    bound = sorted((b["metadata"]["namespace"], b["roleRef"]["name"]) for b in bindings)
    assert bound == sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in roles)
    for binding in bindings:
        assert binding["subjects"] == [
            {
                "kind": "ServiceAccount",
                "name": "tp-tidepool-gateway",
                "namespace": "tidepool-system",
            }
        ]
    args = one(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args
    assert "--all-namespaces" not in args


def test_gateway_with_several_watched_namespaces_fails_to_render(helm: str, tmp_path: Path) -> None:
    values = {"operator": {"watchNamespaces": ["team-a", "team-b"]}}
    proc = run_helm(helm, *template_args(values, tmp_path))
    assert proc.returncode != 0
    assert "gateway.enabled with 2 operator.watchNamespaces" in proc.stderr


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="cluster-wide"),
        pytest.param({"operator": {"watchNamespaces": ["team-a"]}}, id="namespaced"),
    ],
)
def test_no_wildcards_and_no_secrets(render: Render, values: dict[str, Any]) -> None:
    docs = render(values)
    for role in by_kind(docs, "ClusterRole") + by_kind(docs, "Role"):
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule[field], (role["metadata"]["name"], rule)
            assert not {"secrets", "configmaps", "serviceaccounts/token"} & set(rule["resources"])
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])


def test_rbac_create_false(render: Render) -> None:
    docs = render({"rbac": {"create": False}})
    assert not [
        d for d in docs if d["kind"] in {"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    ]


# ---------------------------------------------------------------------------- pod security


def test_pods_meet_restricted_pod_security(render: Render) -> None:
    specs = pod_specs(render())
    assert len(specs) == 2
    for name, spec in specs.items():
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is True, name
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec), name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert sc["runAsNonRoot"] is True, name
            assert c["resources"]["requests"], name


# ------------------------------------------------------------------------------- GPU pools


def test_default_pools_validate_against_the_api(render: Render) -> None:
    pools = by_kind(render(), "GPUPool")
    assert {p["metadata"]["name"]: p["spec"]["tenancy"] for p in pools} == {
        "shared-a100": "shared",
        "dedicated-a100": "dedicated",
    }
    for pool in pools:
        GPUPool.model_validate(pool)
    shared = next(p for p in pools if p["metadata"]["name"] == "shared-a100")
    assert shared["spec"]["pricePerMillionTokens"] == 0.2


def test_default_pools_are_the_documented_example(render: Render) -> None:
    """examples/gpupools.yaml says it shows the chart's default pools; keep that true."""
    example = [
        d for d in yaml.safe_load_all((REPO / "examples" / "gpupools.yaml").read_text()) if d
    ]
    expected = {d["metadata"]["name"]: GPUPool.model_validate(d).spec for d in example}
    rendered = {
        p["metadata"]["name"]: GPUPool.model_validate(p).spec for p in by_kind(render(), "GPUPool")
    }
    assert rendered == expected


def test_pools_are_post_install_hooks_until_the_crd_is_served(render: Render) -> None:
    for pool in by_kind(render(), "GPUPool"):
        notes = pool["metadata"]["annotations"]
        assert notes["helm.sh/hook"] == "post-install"
        # Ownership metadata, so the next `helm upgrade` adopts the hook-created pools.
        assert notes["meta.helm.sh/release-name"] == "tp"
        assert notes["meta.helm.sh/release-namespace"] == "tidepool-system"
        assert pool["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    for pool in by_kind(render(api_versions=[GPUPOOL_API]), "GPUPool"):
        assert "helm.sh/hook" not in pool["metadata"]["annotations"]


def test_chart_pools_are_the_default_pools(render: Render) -> None:
    """An InferenceDeployment that names no pool uses the pool marked default for its tenancy."""
    for api_versions in ([], [GPUPOOL_API]):
        for pool in by_kind(render(api_versions=api_versions), "GPUPool"):
            assert pool["metadata"]["annotations"]["tidepool.dev/is-default-pool"] == "true"


def test_no_pools(render: Render) -> None:
    assert by_kind(render({"gpuPools": []}), "GPUPool") == []


# ------------------------------------------------------------------- optional extras


def test_monitoring_needs_both_the_value_and_the_api(render: Render) -> None:
    on = {"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}}}
    assert not by_kind(render(on), "ServiceMonitor")
    assert not by_kind(render(on), "PodMonitor")
    assert not by_kind(render(api_versions=MONITORING_APIS), "ServiceMonitor")
    docs = render(on, api_versions=MONITORING_APIS)
    sm = one(docs, "ServiceMonitor")
    assert [e["port"] for e in sm["spec"]["endpoints"]] == ["metrics"]
    pm = one(docs, "PodMonitor")
    assert pm["spec"]["selector"]["matchLabels"] == {"tidepool.dev/component": "engine"}
    assert pm["spec"]["namespaceSelector"] == {"any": True}


def test_network_policies(render: Render) -> None:
    assert not by_kind(render(), "NetworkPolicy")
    peer = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}}}
    scraper = {"podSelector": {"matchLabels": {"app": "prometheus"}}}
    docs = render(
        {"networkPolicy": {"enabled": True, "gatewayFrom": [peer], "metricsFrom": [scraper]}}
    )
    gw = one(docs, "NetworkPolicy", "-gateway")
    assert gw["spec"]["ingress"] == [
        {"ports": [{"port": "http", "protocol": "TCP"}], "from": [peer]},
        {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": [scraper]},
    ]
    op = one(docs, "NetworkPolicy", "-operator")
    assert op["spec"]["policyTypes"] == ["Ingress"]


def test_gateway_pdb(render: Render) -> None:
    defaults = by_kind(render(), "PodDisruptionBudget")
    assert [d["metadata"]["name"] for d in defaults] == ["tp-tidepool-operator"]
    docs = render({"gateway": {"podDisruptionBudget": {"enabled": True}}})
    pdb = one(docs, "PodDisruptionBudget", "-gateway")
    assert pdb["spec"]["minAvailable"] == 1
    gateway = one(docs, "Deployment", "-gateway")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == gateway


@pytest.mark.parametrize(
    ("operator", "max_unavailable"),
    [
        pytest.param({}, 1, id="default-two-replicas"),
        pytest.param(
            {"replicas": 4, "podDisruptionBudget": {"maxUnavailable": 2}}, 2, id="four-by-two"
        ),
        pytest.param({"replicas": 1}, None, id="one-replica-none"),
        pytest.param({"podDisruptionBudget": {"enabled": False}}, None, id="disabled"),
    ],
)
def test_operator_pdb(
    render: Render, operator: dict[str, Any], max_unavailable: int | None
) -> None:
    """A node drain evicts one operator replica at a time, so a standby stays to take over; with
    one replica there is no budget (it could only block the drain)."""
    docs = render({"operator": operator})
    budgets = by_kind(docs, "PodDisruptionBudget")
    if max_unavailable is None:
        assert budgets == []
        return
    (pdb,) = budgets
    assert pdb["metadata"]["name"] == "tp-tidepool-operator"
    assert pdb["metadata"]["namespace"] == "tidepool-system"
    assert pdb["spec"]["maxUnavailable"] == max_unavailable
    assert "minAvailable" not in pdb["spec"]
    operator_selector = one(docs, "Deployment", "-operator")["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == operator_selector


def test_common_labels_everywhere(render: Render) -> None:
    docs = render({"commonLabels": {"team": "platform"}}, api_versions=[GPUPOOL_API])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "tp", doc["metadata"]["name"]
        if doc["kind"] != "CustomResourceDefinition":  # generated by `tidepool crd`
            assert labels["team"] == "platform", doc["metadata"]["name"]


# ------------------------------------------------------------------ fitting into other charts


def umbrella(tmp_path: Path, helm: str, values: dict[str, Any]) -> Path:
    """An umbrella chart with Tidepool as a local subchart (no repository, no network)."""
    chart = tmp_path / "platform"
    (chart / "charts").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {"name": "tidepool", "version": "*", "repository": f"file://{CHART}"}
                ],
            }
        )
    )
    (chart / "values.yaml").write_text(yaml.safe_dump(values))
    proc = run_helm(helm, "dependency", "update", str(chart), "--skip-refresh")
    assert proc.returncode == 0, proc.stderr
    return chart


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({}, id="no-globals"),
        pytest.param(
            {"global": {"imageRegistry": "mirror.example.internal", "storageClass": "fast"}},
            id="with-globals",
        ),
    ],
)
def test_installs_as_a_subchart(helm: str, tmp_path: Path, values: dict[str, Any]) -> None:
    """Helm hands every subchart `global`; the closed schema must accept it."""
    chart = umbrella(
        tmp_path, helm, {**values, "tidepool": coalesce(WITH_KEYS, {"gateway": {"replicas": 3}})}
    )
    proc = run_helm(
        helm, "template", "platform", str(chart), "--namespace", "platform",
        "--kube-version", KUBE_VERSION,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert one(docs, "Deployment", "-gateway")["spec"]["replicas"] == 3
    lint = run_helm(helm, "lint", "--strict", str(chart), "--kube-version", KUBE_VERSION)
    assert lint.returncode == 0, lint.stdout + lint.stderr


OPENSHIFT = {
    component: {"podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None}}
    for component in ("operator", "gateway")
}


def test_openshift_render_leaves_the_uid_to_the_scc(render: Render) -> None:
    """OpenShift's restricted SCC assigns a UID from the namespace's range and rejects pods that
    ask for another; null in values removes the key (Helm's rule for null overrides)."""
    for name, spec in pod_specs(render(OPENSHIFT)).items():
        psc = spec["securityContext"]
        assert not {"runAsUser", "runAsGroup", "fsGroup"} & set(psc), name
        assert psc["runAsNonRoot"] is True, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in spec["containers"]:
            assert "runAsUser" not in c["securityContext"], name
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, name


def test_security_contexts_come_from_values(render: Render) -> None:
    docs = render(
        {
            "operator": {"securityContext": {"readOnlyRootFilesystem": True, "runAsUser": 1001}},
            "gateway": {"podSecurityContext": {"runAsNonRoot": True}},
        }
    )
    specs = pod_specs(docs)
    op = next(s for n, s in specs.items() if n.endswith("-operator"))
    gw = next(s for n, s in specs.items() if n.endswith("-gateway"))
    assert op["containers"][0]["securityContext"] == {
        "readOnlyRootFilesystem": True,
        "runAsUser": 1001,
        # values maps merge with the defaults key by key
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert gw["securityContext"]["runAsNonRoot"] is True


EXTRAS = {
    component: {
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": component}},
            }
        ],
        "envFrom": [{"secretRef": {"name": f"{component}-env"}}],
        "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
    }
    for component in ("operator", "gateway")
}


def test_spread_envfrom_and_extra_volumes(render: Render) -> None:
    for name, spec in pod_specs(render(EXTRAS)).items():
        component = name.rsplit("-", 1)[1]
        assert spec["topologySpreadConstraints"] == EXTRAS[component]["topologySpreadConstraints"]
        container = spec["containers"][0]
        assert container["envFrom"] == [{"secretRef": {"name": f"{component}-env"}}]
        volumes = ["tmp", "ca", "api-keys"] if component == "gateway" else ["tmp", "ca"]
        assert [v["name"] for v in spec["volumes"]] == volumes
        assert container["volumeMounts"][0]["mountPath"] == "/tmp"
        assert {"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True} in container[
            "volumeMounts"
        ]


def test_extra_objects_are_rendered_with_tpl(render: Render) -> None:
    docs = render(
        {
            "extraObjects": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "{{ .Release.Name }}-extra"},
                    "data": {"namespace": "{{ .Release.Namespace }}"},
                }
            ]
        }
    )
    cm = one(docs, "ConfigMap", "-extra")
    assert cm["metadata"]["name"] == "tp-extra"
    assert cm["data"] == {"namespace": "tidepool-system"}


# ------------------------------------------------- aggregated roles, alerts, `helm test`


def test_infd_rights_aggregate_into_view_edit_and_admin(render: Render) -> None:
    roles = {r["metadata"]["name"]: r for r in by_kind(render(), "ClusterRole")}
    view, edit = roles["tp-tidepool-view"], roles["tp-tidepool-edit"]
    aggregate = "rbac.authorization.k8s.io/aggregate-to-"
    assert {k for k, v in view["metadata"]["labels"].items() if k.startswith(aggregate)} == {
        f"{aggregate}view",
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    assert {k for k in edit["metadata"]["labels"] if k.startswith(aggregate)} == {
        f"{aggregate}edit",
        f"{aggregate}admin",
    }
    assert allows(view["rules"], "tidepool.dev", "inferencedeployments", "watch")
    assert not allows(view["rules"], "tidepool.dev", "inferencedeployments", "patch")
    assert allows(edit["rules"], "tidepool.dev", "inferencedeployments", "create")
    for role in (view, edit):  # status is the operator's; pools and engines the platform's
        assert not allows(role["rules"], "tidepool.dev", "inferencedeployments/status", "patch")
        assert not any(
            {"gpupools", "sharedengines"} & set(rule["resources"]) for rule in role["rules"]
        )
    off = render({"rbac": {"aggregateToDefaultRoles": False}})
    assert not [r for r in by_kind(off, "ClusterRole") if r["metadata"]["name"].endswith("-view")]


def test_prometheus_rule_alerts(render: Render) -> None:
    values = {"monitoring": {"prometheusRule": {"enabled": True, "labels": {"release": "kps"}}}}
    assert not by_kind(render(values), "PrometheusRule")  # no prometheus-operator: no-op
    docs = render(values, api_versions=["monitoring.coreos.com/v1/PrometheusRule"])
    rule = one(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "TidepoolOperatorDown",
        "TidepoolReconcileErrors",
        "TidepoolMigrationStuck",
        "TidepoolHeldRequestsTimingOut",
        "TidepoolWakeErrors",
    }
    operator_service = one(docs, "Service", "-operator-metrics")["metadata"]["name"]
    assert f'job="{operator_service}"' in alerts["TidepoolOperatorDown"]["expr"]
    assert "tidepool_operator_migrations_in_progress" in alerts["TidepoolMigrationStuck"]["expr"]
    assert "[1h]" in alerts["TidepoolMigrationStuck"]["expr"]
    assert 'code="503"' in alerts["TidepoolHeldRequestsTimingOut"]["expr"]
    # Prometheus' own template syntax survives Helm's.
    assert (
        "{{ $labels.model }}" in alerts["TidepoolHeldRequestsTimingOut"]["annotations"]["summary"]
    )


def test_helm_test_pod_checks_both_services_as_a_restricted_pod(render: Render) -> None:
    docs = render()
    pod = one(docs, "Pod", "-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    container = spec["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    script = container["args"][0]
    gateway = one(docs, "Service", "-gateway")
    operator = one(docs, "Service", "-operator-metrics")
    assert f"http://{gateway['metadata']['name']}:80/readyz" in script
    assert f"http://{operator['metadata']['name']}:9090/metrics" in script
    compile(script, "helm-test", "exec")  # the rendered Python is valid
