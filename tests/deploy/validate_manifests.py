#!/usr/bin/env python3
"""Validates every object of rendered Kubernetes manifests, offline.

    validate_manifests.py PROMTOOL rendered-cpu.yaml rendered-gpu.yaml ...

Kubernetes' own kinds are checked against Kubernetes' OpenAPI schemas, in
strict mode (no property the schema does not name), by kubernetes-validate
(PyPI, pinned in scripts/requirements.txt; it carries the schemas). The
Prometheus Operator's kinds have no schema on PyPI: a PrometheusRule's
groups are checked by Prometheus' own promtool (`check rules`, Debian's
prometheus package), and a ServiceMonitor's shape by CUSTOM_KINDS below,
which check_manifests.py complements (its ports, paths, selectors). Any
other kind fails: a new kind needs a check before it ships.

Prints one line per object; exits 1 if any object is invalid.
"""
import os
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.35"  # the oldest the manifests support


def check_prometheus_rule(obj, promtool):
    """The rule groups as a rule file, through promtool."""
    groups = (obj.get("spec") or {}).get("groups")
    if not groups:
        return "spec.groups: none"
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as rules:
        yaml.safe_dump({"groups": groups}, rules)
        rules.flush()
        run = subprocess.run([promtool, "check", "rules", rules.name],
                             capture_output=True, text=True)
    if run.returncode != 0:
        return f"promtool check rules: {run.stdout}{run.stderr}"
    return None


def check_service_monitor(obj, promtool):
    """The fields the Prometheus Operator requires, of the types it takes."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return "spec: missing"
    if not isinstance(spec.get("selector"), dict):
        return "spec.selector: missing (an empty one selects nothing)"
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        return "spec.endpoints: none"
    allowed = {"port", "targetPort", "path", "scheme", "interval",
               "scrapeTimeout", "honorLabels", "relabelings",
               "metricRelabelings", "tlsConfig", "bearerTokenSecret",
               "authorization", "params", "followRedirects"}
    for i, endpoint in enumerate(endpoints):
        unknown = set(endpoint) - allowed
        if unknown:
            return f"spec.endpoints[{i}]: unknown fields {sorted(unknown)}"
        if "port" not in endpoint and "targetPort" not in endpoint:
            return f"spec.endpoints[{i}]: neither port nor targetPort"
        for duration in ("interval", "scrapeTimeout"):
            value = endpoint.get(duration)
            if value is not None and not (
                    isinstance(value, str) and value[:-1].isdigit()
                    and value[-1] in "smh"):
                return f"spec.endpoints[{i}].{duration}: {value!r} is not " \
                       "a duration like 15s"
    return None


CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
}


def main():
    promtool, files = sys.argv[1], sys.argv[2:]
    failed = False
    for path in files:
        with open(path) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        for obj in objects:
            kind, api = obj.get("kind"), obj.get("apiVersion")
            name = f"{os.path.basename(path)}: {kind}/" \
                   f"{(obj.get('metadata') or {}).get('name')}"
            custom = CUSTOM_KINDS.get((api, kind))
            if custom is not None:
                error = custom(obj, promtool)
                how = "promtool" if kind == "PrometheusRule" else "shape"
            else:
                how = f"Kubernetes {KUBERNETES_VERSION} schema, strict"
                try:
                    kubernetes_validate.validate(obj, KUBERNETES_VERSION,
                                                 strict=True)
                    error = None
                except kubernetes_validate.SchemaNotFoundError:
                    error = f"no schema for {api} {kind}"
                except kubernetes_validate.ValidationError as e:
                    where = ".".join(str(p) for p in e.path)
                    error = f"{where}: {e.message}"
            if error:
                print(f"INVALID {name}: {error}")
                failed = True
            else:
                print(f"valid   {name} ({api}; {how})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
