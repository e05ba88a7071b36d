"""Offline validation of the rendered Kubernetes overlays (run by scripts/validate-k8s.sh).

For every rendered overlay:
- core objects against the Kubernetes 1.32 schemas (kubernetes-validate --strict);
- Dapr, Strimzi, CloudNativePG and Prometheus Operator objects against the JSON Schemas in
  k8s/schemas (check-jsonschema);
- every Dapr Component's metadata names against its component's metadata.yaml;
- invariants: each Deployment's dapr.io/app-port equals its container port and probe ports;
  every topic the code publishes (schemas/events) or subscribes to (Subscriptions, dead-letter
  topics included) has a KafkaTopic; Component and Subscription scopes name exactly the app ids
  that use them; no container can run as root; prod runs at least two replicas with an HPA and
  a PDB each;
- monitoring (k8s/base/monitoring): every PodMonitor selects pods that have its ports (daprd's
  as the sidecar injector adds them), and their NetworkPolicy admits the monitoring namespace to
  each; METRICS_PORT is the `metrics` port; the rules' job matches the PodMonitors' job label;
  every alert has a severity, a summary, a description and a runbook that is a heading of
  docs/operations.md; each consumer's ConsumerStoppedReceiving rule names exactly the topics it
  subscribes to; the dashboard ConfigMap is labelled for Grafana's sidecar and every panel uses
  the data source variable;
- with --promtool: the PrometheusRules' groups written out as a rules file, `promtool check
  rules` on it, `promtool test rules` of --alert-tests, and every dashboard expression parsed
  (`promtool promql format`).

Prints one line per check and a closing `N passed, N failed`; exits 1 on any failure.

`--metric-names FILE...` instead prints, one per line, the metric names (every `dapr_...`
identifier) that the alert expressions and dashboard panels of the given files use: YAML with
PrometheusRules or dashboard ConfigMaps (a rendered overlay, k8s/base/monitoring/alerts.yaml),
or dashboard JSON files. Histograms appear as the series they use (`..._bucket`).
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
DAPR_PUBSUB_KEYS = {"publishingScopes", "subscriptionScopes", "allowedTopics", "protectedTopics"}
# The ports the sidecar injector gives the `daprd` container (dapr/dapr pkg/injector/consts and
# patcher/sidecar_container.go, v1.18): name -> (annotation that moves it, default).
DAPRD_PORTS = {"dapr-http": ("dapr.io/sidecar-http-port", 3500), "dapr-grpc": ("dapr.io/sidecar-api-grpc-port", 50001),
               "dapr-internal": ("dapr.io/sidecar-internal-grpc-port", 50002), "dapr-metrics": ("dapr.io/metrics-port", 9090)}
MONITORING_NAMESPACE = "monitoring"
SEVERITIES = {"warning", "critical"}

results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")


def run(command):
    done = subprocess.run(command, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).splitlines()
    return done.returncode == 0, "\n".join(line for line in lines if not line.startswith("INFO ")).strip()


def component_metadata(shared, component_type):
    """The metadata a component accepts (k8s/schemas/README.md, 'Checking Dapr Component
    metadata names'): name -> the values it allows, or None where any value goes. A name defined
    in several authentication profiles allows the values of all of them."""
    kind, name = component_type.split(".", 1)
    spec = yaml.safe_load((shared / "dapr-component-metadata" / kind / name / "metadata.yaml").read_text())
    builtin = yaml.safe_load((shared / "dapr-component-metadata" / "builtin-authentication-profiles.yaml").read_text())
    fields = list(spec.get("metadata") or [])
    for profile in spec.get("authenticationProfiles") or []:
        fields += profile.get("metadata") or []
    for profile in spec.get("builtinAuthenticationProfiles") or []:
        fields += profile.get("metadata") or []
        for builtin_profile in builtin.get(profile["name"]) or []:
            fields += builtin_profile.get("metadata") or []
    accepted = {key: None for key in DAPR_PUBSUB_KEYS}
    for field in fields:
        name, allowed = field["name"], field.get("allowedValues")
        if allowed is None or (name in accepted and accepted[name] is None):
            accepted[name] = None  # free somewhere: free everywhere
        else:
            accepted[name] = set(map(str, allowed)) | accepted.get(name, set())
    return accepted


def validate(overlay, docs, shared, repo, workdir, promtool=None, alert_tests=None):
    core, custom = [], {}
    for index, doc in enumerate(docs):
        path = workdir / f"{overlay}-{index:03}-{doc['kind']}-{doc['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        if doc["apiVersion"] in CORE_GROUPS:
            core.append(str(path))
        else:
            schema = shared / f"{doc['apiVersion'].replace('/', '_')}_{doc['kind']}.json"
            custom.setdefault(schema, []).append(str(path))

    ok, out = run(["kubernetes-validate", "-k", "1.32.0", "--strict", *core])
    check(f"{overlay}: {len(core)} core objects against the Kubernetes 1.32 schemas", ok, out)
    for schema, files in sorted(custom.items()):
        exists = schema.exists()
        check(f"{overlay}: a schema exists for {schema.name}", exists)
        if exists:
            ok, out = run(["check-jsonschema", "--schemafile", str(schema), *files])
            check(f"{overlay}: {len(files)} x {schema.stem}", ok, out)

    by_kind = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = by_kind.get("Deployment", [])
    app_ids = {d["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-id"] for d in deployments}

    for component in by_kind.get("Component", []):
        accepted = component_metadata(shared, component["spec"]["type"])
        used = {m["name"] for m in component["spec"].get("metadata") or []}
        check(f"{overlay}: Component {component['metadata']['name']} metadata names are known to {component['spec']['type']}",
              used <= accepted.keys(), f"unknown: {sorted(used - accepted.keys())}")
        # daprd does not reject a value it does not know: it falls back (a saslMechanism other
        # than SHA-512/SHA-256 silently means SASL PLAIN), so the cluster would fail at runtime.
        refused = [f"{m['name']}={m['value']!r} (allowed: {sorted(accepted[m['name']])})"
                   for m in component["spec"].get("metadata") or []
                   if "value" in m and accepted.get(m["name"]) and str(m["value"]) not in accepted[m["name"]]]
        check(f"{overlay}: Component {component['metadata']['name']} metadata values are among the allowed ones",
              not refused, "; ".join(refused))
        check(f"{overlay}: Component {component['metadata']['name']} is scoped to exactly the apps",
              set(component.get("scopes") or []) == app_ids, f"{component.get('scopes')} vs {sorted(app_ids)}")

    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        app_port = int(deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/app-port"])
        for container in pod["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
            probe_ports = [container[p]["httpGet"]["port"] for p in ("livenessProbe", "readinessProbe") if p in container]
            probe_ports = [ports.get(p, p) for p in probe_ports]
            check(f"{overlay}: {name} app-port {app_port} is its container port and probe port",
                  app_port in ports.values() and probe_ports and all(p == app_port for p in probe_ports),
                  f"container ports {ports}, probes {probe_ports}")
            security = container.get("securityContext", {})
            pod_security = pod.get("securityContext", {})
            user = security.get("runAsUser", pod_security.get("runAsUser"))
            non_root = (security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True) and user not in (None, 0)
            check(f"{overlay}: {name}/{container['name']} cannot run as root", non_root, f"{pod_security} {security}")
            hardened = (security.get("allowPrivilegeEscalation") is False and security.get("readOnlyRootFilesystem") is True
                        and security.get("capabilities", {}).get("drop") == ["ALL"]
                        and pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault")
            check(f"{overlay}: {name}/{container['name']} is locked down (no escalation, read-only root, no capabilities, seccomp)",
                  hardened, str(security))
            check(f"{overlay}: {name}/{container['name']} has resource requests and limits",
                  bool(container.get("resources", {}).get("requests")) and bool(container.get("resources", {}).get("limits")))

    topics = {t["spec"].get("topicName", t["metadata"]["name"]) for t in by_kind.get("KafkaTopic", [])}
    published = {p.name for p in (repo / "schemas" / "events").iterdir() if p.is_dir()}
    subscribed = set()
    for subscription in by_kind.get("Subscription", []):
        spec = subscription["spec"]
        subscribed.add(spec["topic"])
        if spec.get("deadLetterTopic"):
            subscribed.add(spec["deadLetterTopic"])
        scopes = subscription.get("scopes") or []
        check(f"{overlay}: Subscription {subscription['metadata']['name']} is scoped to the one app it routes to",
              len(scopes) == 1 and scopes[0] in app_ids and subscription["metadata"]["name"].startswith(scopes[0] + "-"),
              str(scopes))
    check(f"{overlay}: every published topic has a KafkaTopic", published <= topics, f"missing {sorted(published - topics)}")
    check(f"{overlay}: every subscribed and dead-letter topic has a KafkaTopic", subscribed <= topics,
          f"missing {sorted(subscribed - topics)}")

    validate_monitoring(overlay, docs, by_kind, repo, workdir, promtool, alert_tests)

    if overlay == "prod":
        for deployment in deployments:
            name = deployment["metadata"]["name"]
            check(f"prod: {name} runs at least 2 replicas", deployment["spec"].get("replicas", 1) >= 2)
            check(f"prod: {name} has a HorizontalPodAutoscaler",
                  any(h["spec"]["scaleTargetRef"]["name"] == name and h["spec"]["minReplicas"] >= 2
                      for h in by_kind.get("HorizontalPodAutoscaler", [])))
            check(f"prod: {name} has a PodDisruptionBudget",
                  any(p["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
                      for p in by_kind.get("PodDisruptionBudget", [])))


def selects(selector, labels):
    """Whether a metav1.LabelSelector selects these labels ({} selects everything)."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if (operator == "In" and labels.get(key) not in values) or (operator == "NotIn" and labels.get(key) in values) \
                or (operator == "Exists" and key not in labels) or (operator == "DoesNotExist" and key in labels):
            return False
    return True


def pod_ports(deployment):
    """The named ports of a Deployment's pods: its containers' and, when Dapr injects a
    sidecar, daprd's. name -> (container, port number)."""
    template = deployment["spec"]["template"]
    ports = {p["name"]: (c["name"], p["containerPort"]) for c in template["spec"]["containers"]
             for p in c.get("ports") or [] if p.get("name")}
    annotations = template["metadata"].get("annotations") or {}
    if annotations.get("dapr.io/enabled") == "true":
        for name, (annotation, default) in DAPRD_PORTS.items():
            if name == "dapr-metrics" and annotations.get("dapr.io/enable-metrics", "true") == "false":
                continue
            ports[name] = ("daprd", int(annotations.get(annotation, default)))
    return ports


def container_env(container, config_maps):
    """A container's environment from its env values and the ConfigMaps of its envFrom."""
    env = {}
    for source in container.get("envFrom") or []:
        ref = (source.get("configMapRef") or {}).get("name")
        env.update((config_maps.get(ref) or {}).get("data") or {})
    env.update({e["name"]: e["value"] for e in container.get("env") or [] if "value" in e})
    return env


def admits(policies, labels, namespace, port, port_name):
    """Whether the NetworkPolicies selecting these pod labels let `namespace` reach the port."""
    selecting = [p for p in policies if selects(p["spec"].get("podSelector"), labels)]
    if not any("Ingress" in p["spec"].get("policyTypes", ["Ingress"]) for p in selecting):
        return True  # no policy isolates the pods' ingress
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            from_namespace = peers is None or any(
                "podSelector" not in peer and "ipBlock" not in peer and
                selects(peer.get("namespaceSelector", {}), {"kubernetes.io/metadata.name": namespace})
                for peer in peers)
            ports = rule.get("ports")
            to_port = ports is None or any(p.get("port") in (port, port_name) for p in ports)
            if from_namespace and to_port:
                return True
    return False


def headings(markdown):
    """The anchors GitHub gives a Markdown file's headings (code blocks skipped)."""
    anchors, fenced = set(), False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            text = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def rule_groups(docs):
    return [group for doc in docs if doc.get("kind") == "PrometheusRule" for group in doc["spec"].get("groups") or []]


def dashboards(docs):
    """(ConfigMap, key, dashboard) of every ConfigMap that carries a dashboard JSON."""
    return [(doc, key, json.loads(text)) for doc in docs if doc.get("kind") == "ConfigMap"
            for key, text in (doc.get("data") or {}).items() if key.endswith(".json")]


def panels_of(dashboard):
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def dashboard_exprs(dashboard):
    exprs = [t["expr"] for p in panels_of(dashboard) for t in p.get("targets") or [] if t.get("expr")]
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query.get("query") if isinstance(query, dict) else query)
    return [e for e in exprs if e]


def without_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)


def metric_names(exprs):
    return sorted({name for e in exprs for name in re.findall(r"(?<![\w:])dapr_[a-z0-9_]+", without_strings(e))})


def as_promql(grafana_expr):
    """A dashboard expression with Grafana's variables replaced, for the PromQL parser; a
    variable's label_values(QUERY, LABEL) is its QUERY."""
    expr = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", grafana_expr, flags=re.S)
    expr = re.sub(r"\$__(rate_)?interval|\$__range", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", "x", expr)


def validate_monitoring(overlay, docs, by_kind, repo, workdir, promtool, alert_tests):
    """The monitoring invariants of the module docstring; with promtool, the rules' checks and
    tests (in workdir) and the dashboard's PromQL."""
    deployments = by_kind.get("Deployment", [])
    policies = by_kind.get("NetworkPolicy", [])
    config_maps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    job_values = set()
    for monitor in by_kind.get("PodMonitor", []):
        name = monitor["metadata"]["name"]
        selected = [d for d in deployments if selects(monitor["spec"].get("selector"), d["spec"]["template"]["metadata"].get("labels") or {})]
        check(f"{overlay}: PodMonitor {name} selects pods", bool(selected))
        job_label = monitor["spec"].get("jobLabel")
        for deployment in selected:
            labels = deployment["spec"]["template"]["metadata"].get("labels") or {}
            ports = pod_ports(deployment)
            if job_label:
                check(f"{overlay}: PodMonitor {name}'s jobLabel {job_label} is a label of {deployment['metadata']['name']}'s pods",
                      job_label in labels)
                job_values.add(labels.get(job_label))
            else:
                job_values.add(f"{monitor['metadata'].get('namespace', '')}/{name}")
            for endpoint in monitor["spec"].get("podMetricsEndpoints") or []:
                port_name = endpoint.get("port")
                where = f"PodMonitor {name} port {port_name} on {deployment['metadata']['name']}"
                check(f"{overlay}: {where} exists", port_name in ports, f"the pods' ports: {sorted(ports)}")
                if port_name in ports:
                    number = ports[port_name][1]
                    check(f"{overlay}: {where} ({number}) is open to the {MONITORING_NAMESPACE} namespace",
                          admits(policies, labels, MONITORING_NAMESPACE, number, port_name))

    for deployment in deployments:
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
            env = container_env(container, config_maps)
            if "metrics" in ports or "METRICS_PORT" in env:
                check(f"{overlay}: {deployment['metadata']['name']}/{container['name']} METRICS_PORT is its metrics port",
                      str(ports.get("metrics")) == str(env.get("METRICS_PORT")),
                      f"METRICS_PORT {env.get('METRICS_PORT')!r}, port metrics {ports.get('metrics')!r}")

    groups = rule_groups(docs)
    rules = [r for g in groups for r in g.get("rules") or []]
    anchors = headings((repo / "docs" / "operations.md").read_text())
    for rule in (r for r in rules if "alert" in r):
        alert, annotations = rule["alert"], rule.get("annotations") or {}
        check(f"{overlay}: alert {alert} has a severity", (rule.get("labels") or {}).get("severity") in SEVERITIES,
              str(rule.get("labels")))
        check(f"{overlay}: alert {alert} has a summary, a description and a runbook",
              all(annotations.get(k) for k in ("summary", "description", "runbook")), str(sorted(annotations)))
        runbook = annotations.get("runbook", "")
        check(f"{overlay}: alert {alert}'s runbook {runbook} is a heading of docs/operations.md",
              runbook.startswith("docs/operations.md#") and runbook.split("#", 1)[1] in anchors)
        for job in re.findall(r'\bjob="([^"]*)"', str(rule["expr"])):
            check(f"{overlay}: alert {alert}'s job {job!r} is the PodMonitors' job", job in job_values, str(sorted(job_values)))

    # Each ConsumerStoppedReceiving rule (labelled with its consumer) waits for publishes to the
    # consumer's topics: exactly those of its Subscriptions, dead-letter topics aside ...
    subscribed = {}
    for subscription in by_kind.get("Subscription", []):
        for app in subscription.get("scopes") or []:
            subscribed.setdefault(app, set()).add(subscription["spec"]["topic"])
    dead_letter = {s["spec"]["deadLetterTopic"] for s in by_kind.get("Subscription", []) if s["spec"].get("deadLetterTopic")}
    known = set().union(*subscribed.values(), {p.name for p in (repo / "schemas" / "events").iterdir() if p.is_dir()})
    for rule in (r for r in rules if r.get("alert") == "ConsumerStoppedReceiving"):
        expr = str(rule["expr"])
        service = (rule.get("labels") or {}).get("service")
        service = re.search(r'dapr_todo_last_delivery_timestamp_seconds\{service="(%s)"\}' % re.escape(service), expr) if service else None
        topics = re.search(r'topic=~"((?:[^"\\]|\\.)*)"', expr)
        # ... and reads that consumer's gauge and scrape target.
        name = service.group(1) if service else "?"
        matched, expected = set(), subscribed.get(name, set()) - dead_letter
        if topics:
            pattern = topics.group(1).encode().decode("unicode_escape")
            matched = {t for t in known if re.fullmatch(pattern, t)}
        check(f"{overlay}: ConsumerStoppedReceiving for {name} reads its gauge and target, and waits for exactly its subscribed topics",
              bool(service) and f'container="{name}"' in expr and bool(expected) and matched == expected,
              f"the rule's topics {sorted(matched)}, subscribed {sorted(expected)}")

    boards = dashboards(docs)
    for config_map, key, dashboard in boards:
        name = config_map["metadata"]["name"]
        check(f"{overlay}: ConfigMap {name} is labelled for Grafana's dashboard sidecar",
              (config_map["metadata"].get("labels") or {}).get("grafana_dashboard") == "1")
        check(f"{overlay}: dashboard {key} has a uid and a title", bool(dashboard.get("uid")) and bool(dashboard.get("title")))
        variables = {v["name"] for v in (dashboard.get("templating") or {}).get("list") or []}
        wrong = [p.get("title") for p in panels_of(dashboard) if p.get("type") != "row" and
                 [p.get("datasource", {}).get("uid")] + [t.get("datasource", {}).get("uid") for t in p.get("targets") or []]
                 != ["${datasource}"] * (1 + len(p.get("targets") or []))]
        check(f"{overlay}: every panel of {key} queries the $datasource variable", "datasource" in variables and not wrong,
              f"panels: {wrong}")

    if promtool is None:
        return
    if groups:
        rules_file = workdir / "alerts.rules.yaml"
        rules_file.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        ok, out = run([promtool, "check", "rules", "--lint-fatal", str(rules_file)])
        check(f"{overlay}: promtool check rules ({len(rules)} rules)", ok, out)
        if alert_tests:
            tests = workdir / alert_tests.name
            shutil.copyfile(alert_tests, tests)
            ok, out = run([promtool, "test", "rules", str(tests)])
            check(f"{overlay}: promtool test rules {alert_tests}", ok, out)
    for _, key, dashboard in boards:
        failed = []
        for expr in dashboard_exprs(dashboard):
            ok, out = run([promtool, "--experimental", "promql", "format", as_promql(expr)])
            if not ok:
                failed.append(f"{expr}: {out}")
        check(f"{overlay}: every expression of dashboard {key} parses", not failed, "\n".join(failed))


def print_metric_names(paths):
    exprs = []
    for path in paths:
        if path.suffix == ".json":
            exprs += dashboard_exprs(json.loads(path.read_text()))
            continue
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        exprs += [str(r["expr"]) for g in rule_groups(docs) for r in g.get("rules") or []]
        exprs += [e for _, _, dashboard in dashboards(docs) for e in dashboard_exprs(dashboard)]
    for name in metric_names(exprs):
        print(name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--metric-names", action="store_true",
                        help="print the metric names the alert rules and dashboards of the given files use, and exit")
    parser.add_argument("--schemas", type=pathlib.Path)
    parser.add_argument("--repo", type=pathlib.Path)
    parser.add_argument("--promtool", help="check and unit-test the alert rules, parse the dashboard expressions")
    parser.add_argument("--alert-tests", type=pathlib.Path, help="the promtool rule tests (rule_files: alerts.rules.yaml)")
    parser.add_argument("rendered", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    if args.metric_names:
        print_metric_names(args.rendered)
        return
    if not args.schemas or not args.repo:
        parser.error("--schemas and --repo are required")
    shared = args.schemas
    with tempfile.TemporaryDirectory() as workdir:
        for rendered in args.rendered:
            docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
            overlay_dir = pathlib.Path(workdir) / rendered.stem
            overlay_dir.mkdir()
            validate(rendered.stem, docs, shared, args.repo, overlay_dir, args.promtool,
                     args.alert_tests.resolve() if args.alert_tests else None)
    failed = results.count(False)
    print(f"k8s: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
