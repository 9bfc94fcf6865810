#!/usr/bin/env python3
"""Cross-checks rendered loopserve manifests against each other and the server.

    check_manifests.py SOURCE_DIR rendered-cpu.yaml rendered-gpu.yaml

Schemas say each object is well formed; this says they fit together: probe
and Service ports are container ports, the flags name the same ports, the
grace period covers preStop plus the drain, the HPA's metric is the one the
prometheus-adapter rule defines, every alert's runbook exists. A file whose
name contains "gpu" must ask for a GPU and run on CUDA; others must not.
"""
import re
import sys

import yaml

READINESS_SERVICE = "loopserve.v1.LoopPipelineService"
LIVENESS_SERVICE = "liveness"
# After the grace period the server gives streams 5 s to finish (LoopServer).
STREAM_CUTOFF_S = 5

errors = []


def check(condition, message):
    if not condition:
        errors.append(message)


def subset(labels, of):
    return all(of.get(k) == v for k, v in (labels or {}).items())


def anchors(markdown):
    """GitHub's heading anchors."""
    found = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            text = re.sub(r"[^\w\s-]", "", m.group(1).strip().lower())
            found.add(re.sub(r"\s", "-", text))
    return found


def check_file(path, source, adapter_metrics, doc_anchors):
    objects = [o for o in yaml.safe_load_all(open(path)) if o]
    kinds = {}
    for o in objects:
        kinds.setdefault(o["kind"], []).append(o)
    where = path.rsplit("/", 1)[-1]
    for kind in ["Deployment", "Service", "ConfigMap", "ServiceMonitor",
                 "HorizontalPodAutoscaler", "PodDisruptionBudget",
                 "PrometheusRule"]:
        check(kind in kinds, f"{where}: no {kind}")
    if errors:
        return

    deployment = kinds["Deployment"][0]
    pod = deployment["spec"]["template"]
    pod_labels = pod["metadata"]["labels"]
    spec = pod["spec"]
    container = next(c for c in spec["containers"] if c["name"] == "loopserve")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    flags = dict(a[2:].split("=", 1) for a in container["args"])

    # With TLS on the grpc port the kubelet's probes (which cannot speak
    # TLS) ask the plaintext --health_port.
    tls = "tls_cert_file" in flags
    # Every security file (TLS, tokens, the checkpoint key) comes from a
    # Secret mounted where its flag points.
    secret_mounts = {
        m["mountPath"] for m in container.get("volumeMounts", [])
        if any(v["name"] == m["name"] and "secret" in v
               for v in spec.get("volumes", []))}
    expected_ports = {"grpc", "http", "metrics"} | ({"health"} if tls else set())
    check(set(ports) == expected_ports,
          f"{where}: container ports are {sorted(ports)}, not {sorted(expected_ports)}")
    probe_port = "health" if tls else "grpc"
    if tls:
        check(int(flags.get("health_port", 0)) == ports.get("health"),
              f"{where}: --health_port differs from the health port")
        for flag in ["tls_cert_file", "tls_key_file", "tls_client_ca_file",
                     "auth_tokens_file"]:
            if flag in flags:
                check(flags[flag].rsplit("/", 1)[0] in secret_mounts,
                      f"{where}: --{flag}={flags[flag]} is not in a mounted Secret")
    # The checkpoint key is shared by every replica (a run resumes on any).
    key_file = flags.get("checkpoint_key_file", "")
    check(key_file.rsplit("/", 1)[0] in secret_mounts,
          f"{where}: --checkpoint_key_file={key_file!r} is not in a mounted Secret")
    check(int(flags.get("port", 50051)) == ports["grpc"],
          f"{where}: --port={flags.get('port')} but the grpc port is {ports['grpc']}")
    check(int(flags.get("metrics_port", 9464)) == ports["metrics"],
          f"{where}: --metrics_port differs from the metrics port")
    check(int(flags.get("http_port", 8000)) == ports["http"],
          f"{where}: --http_port differs from the http port")

    def port_of(ref):
        return ports.get(ref, ref)

    for name, service in [("startupProbe", READINESS_SERVICE),
                          ("readinessProbe", READINESS_SERVICE),
                          ("livenessProbe", LIVENESS_SERVICE)]:
        probe = container.get(name)
        check(probe is not None and "grpc" in probe, f"{where}: no gRPC {name}")
        if probe and "grpc" in probe:
            check(port_of(probe["grpc"]["port"]) == ports[probe_port],
                  f"{where}: {name} asks port {probe['grpc']['port']}, not the {probe_port} port")
            check(probe["grpc"].get("service") == service,
                  f"{where}: {name} asks service {probe['grpc'].get('service')!r}, not {service!r}")

    annotations = pod["metadata"].get("annotations", {})
    check(annotations.get("prometheus.io/scrape") == "true",
          f"{where}: no prometheus.io/scrape annotation")
    check(annotations.get("prometheus.io/port") == str(ports["metrics"]),
          f"{where}: prometheus.io/port is not the metrics port")

    # Shutdown: preStop, then SIGTERM: --shutdown_grace_s, then the cut-off.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    sleep_s = float(pre_stop[-1]) if pre_stop[0] == "sleep" else 0
    needed = sleep_s + float(flags.get("shutdown_grace_s", 30)) + STREAM_CUTOFF_S
    grace = spec.get("terminationGracePeriodSeconds", 30)
    check(grace >= needed,
          f"{where}: terminationGracePeriodSeconds {grace} < preStop {sleep_s} "
          f"+ --shutdown_grace_s + {STREAM_CUTOFF_S} = {needed}")

    for service in kinds["Service"]:
        name = service["metadata"]["name"]
        check(subset(service["spec"]["selector"], pod_labels),
              f"{where}: Service {name} selects no loopserve pod")
        for port in service["spec"]["ports"]:
            check(port_of(port["targetPort"]) in ports.values(),
                  f"{where}: Service {name} port {port['name']} targets "
                  f"{port['targetPort']}, not a container port")
            check(port["name"] in ports and port_of(port["targetPort"]) == ports[port["name"]],
                  f"{where}: Service {name} port {port['name']} is not the container's {port['name']} port")
    headless = [s for s in kinds["Service"] if s["spec"].get("clusterIP") == "None"]
    check(len(headless) == 1 and any(p["name"] == "grpc" for p in headless[0]["spec"]["ports"]),
          f"{where}: no headless Service with a grpc port")

    for monitor in kinds["ServiceMonitor"]:
        selected = [s for s in kinds["Service"]
                    if subset(monitor["spec"]["selector"]["matchLabels"],
                              s["metadata"].get("labels", {}))]
        check(len(selected) == 1,
              f"{where}: the ServiceMonitor selects {len(selected)} Services, not 1")
        for endpoint in monitor["spec"]["endpoints"]:
            check(all(any(p["name"] == endpoint["port"] for p in s["spec"]["ports"])
                      for s in selected),
                  f"{where}: ServiceMonitor port {endpoint['port']} is not a Service port")

    config_maps = {c["metadata"]["name"] for c in kinds["ConfigMap"]}
    config_dir = flags.get("config", "").rsplit("/", 1)[0]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    for volume in spec["volumes"]:
        if "configMap" in volume:
            check(volume["configMap"]["name"] in config_maps,
                  f"{where}: volume {volume['name']} names a ConfigMap that is not rendered")
            check(mounts.get(volume["name"]) == config_dir,
                  f"{where}: the ConfigMap is not mounted where --config points")

    for hpa in kinds["HorizontalPodAutoscaler"]:
        check(hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"],
              f"{where}: the HPA scales something else")
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Pods":
                check(metric["pods"]["metric"]["name"] in adapter_metrics,
                      f"{where}: HPA metric {metric['pods']['metric']['name']} is not "
                      f"defined by the prometheus-adapter rule")
    for pdb in kinds["PodDisruptionBudget"]:
        check(subset(pdb["spec"]["selector"]["matchLabels"], pod_labels),
              f"{where}: the PodDisruptionBudget selects no loopserve pod")

    for rule_set in kinds["PrometheusRule"]:
        for group in rule_set["spec"]["groups"]:
            for rule in group["rules"]:
                runbook = rule.get("annotations", {}).get("runbook", "")
                anchor = runbook.split("#", 1)[-1]
                check(runbook.startswith("docs/operations.md#") and anchor in doc_anchors,
                      f"{where}: alert {rule['alert']}: runbook {runbook!r} is not a "
                      f"heading of docs/operations.md")

    limits = container.get("resources", {}).get("limits", {})
    if "gpu" in where:
        check(int(limits.get("nvidia.com/gpu", 0)) >= 1, f"{where}: no nvidia.com/gpu limit")
        check(flags.get("device", "").startswith("cuda"), f"{where}: --device is not cuda")
    else:
        check("nvidia.com/gpu" not in limits, f"{where}: a CPU overlay asks for a GPU")
        check(flags.get("device") == "cpu", f"{where}: --device is not cpu")
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True,
          f"{where}: pods may run as root")
    if not errors:
        print(f"consistent: {where} ({len(objects)} objects)")


def main():
    source, files = sys.argv[1], sys.argv[2:]
    adapter = yaml.safe_load(open(f"{source}/deploy/k8s/prometheus-adapter/rules.yaml"))
    adapter_metrics = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    doc_anchors = anchors(open(f"{source}/docs/operations.md").read())
    for path in files:
        check_file(path, source, adapter_metrics, doc_anchors)
    for e in errors:
        print("FAIL:", e, file=sys.stderr)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
