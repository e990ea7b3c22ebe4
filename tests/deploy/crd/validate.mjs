// Reads a JSON array of Kubernetes objects on stdin; validates every ServiceMonitor and
// PrometheusRule against the prometheus-operator schema. Exit 1 with the errors if any.
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";

const models = { ServiceMonitor, PrometheusRule };
let input = "";
for await (const chunk of process.stdin) input += chunk;
let failed = 0;
let checked = 0;
for (const obj of JSON.parse(input)) {
  const Model = models[obj.kind];
  if (!Model) continue;
  checked += 1;
  try {
    new Model(obj).validate();
  } catch (err) {
    failed += 1;
    console.error(`${obj.kind}/${obj.metadata?.name}: ${err.message}`);
  }
}
console.log(`checked ${checked}, failed ${failed}`);
process.exit(failed ? 1 : 0);
