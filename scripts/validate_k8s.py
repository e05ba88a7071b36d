"""Offline validation of the rendered Kubernetes overlays (run by scripts/validate-k8s.sh).

For every rendered overlay:
- core objects against the Kubernetes 1.32 schemas (kubernetes-validate --strict);
- Dapr, Strimzi and CloudNativePG objects against the JSON Schemas in k8s/schemas
  (check-jsonschema);
- every Dapr Component's metadata names against its component's metadata.yaml;
- invariants: each Deployment's dapr.io/app-port equals its container port and probe ports;
  every topic the code publishes (schemas/events) or subscribes to (Subscriptions, dead-letter
  topics included) has a KafkaTopic; Component and Subscription scopes name exactly the app ids
  that use them; no container can run as root; prod runs at least two replicas with an HPA and
  a PDB each.

Prints one line per check and a closing `N passed, N failed`; exits 1 on any failure.
"""

import argparse
import pathlib
import subprocess
import sys
import tempfile

import yaml

CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "autoscaling/v2", "networking.k8s.io/v1"}
DAPR_PUBSUB_KEYS = {"publishingScopes", "subscriptionScopes", "allowedTopics", "protectedTopics"}

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


def validate(overlay, docs, shared, repo, workdir):
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--schemas", required=True, type=pathlib.Path)
    parser.add_argument("--repo", required=True, type=pathlib.Path)
    parser.add_argument("rendered", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    shared = args.schemas
    with tempfile.TemporaryDirectory() as workdir:
        for rendered in args.rendered:
            docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
            validate(rendered.stem, docs, shared, args.repo, pathlib.Path(workdir))
    failed = results.count(False)
    print(f"k8s: {len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
