// Validates every object of rendered Kubernetes manifests, offline, against
// the schemas of the npm packages kubernetes-models (Kubernetes' OpenAPI) and
// @kubernetes-models/prometheus-operator (ServiceMonitor, PrometheusRule).
//
//   node validate.cjs rendered-cpu.yaml rendered-gpu.yaml
//
// Prints one line per object; exits 1 on the first file with an invalid
// object, or an object of a kind no schema covers.
"use strict";
const fs = require("fs");
const YAML = require("yaml");

// apiVersion -> the module directory holding its kinds.
function modulePath(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/")
    ? apiVersion.split("/")
    : ["", apiVersion];
  if (group === "monitoring.coreos.com") {
    return `@kubernetes-models/prometheus-operator/${group}/${version}/${kind}`;
  }
  return group === ""
    ? `kubernetes-models/${version}/${kind}`
    : `kubernetes-models/${group}/${version}/${kind}`;
}

let failed = false;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  for (const doc of docs) {
    if (doc.errors.length > 0) {
      console.error(`${file}: YAML: ${doc.errors[0].message}`);
      failed = true;
      continue;
    }
    const object = doc.toJS();
    if (object === null) continue;
    const name = `${file}: ${object.kind}/${object.metadata && object.metadata.name}`;
    let Model;
    try {
      Model = require(modulePath(object.apiVersion, object.kind))[object.kind];
    } catch (e) {
      console.error(`${name}: no schema for ${object.apiVersion} ${object.kind}`);
      failed = true;
      continue;
    }
    try {
      new Model(object).validate();
      console.log(`valid   ${name} (${object.apiVersion})`);
    } catch (e) {
      console.error(`INVALID ${name}: ${e.message}`);
      failed = true;
    }
  }
}
process.exit(failed ? 1 : 0);
