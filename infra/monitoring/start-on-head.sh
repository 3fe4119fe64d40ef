#!/usr/bin/env bash
# Prometheus and Grafana on a Ray head, for the Ray dashboard's time series and the
# mammotune dashboard. Run after `ray start --head` (infra/aws/cluster.yaml does), with the
# same RAY_PROMETHEUS_HOST / RAY_GRAFANA_HOST / RAY_GRAFANA_IFRAME_HOST that `ray start` had:
#   - Prometheus with dashboards/prometheus/prometheus.yml, which scrapes every node through
#     the service-discovery file Ray's head keeps (autoscaled workers included);
#   - Grafana with the provisioning Ray generated for this session (its Prometheus data source
#     is RAY_PROMETHEUS_HOST; Ray's own dashboards) plus dashboards/grafana/mammotune.json.
# Both listen on 127.0.0.1 only: reach them through the SSH tunnel (README, "Watch it").
set -euo pipefail

REPO=${MAMMOTUNE_HOME:-/opt/mammotune}
RAY_TMP=${RAY_TMP:-/tmp/ray}
SESSION="$RAY_TMP/session_latest"
STATE=${MONITORING_DIR:-$HOME/monitoring}
mkdir -p "$STATE"

# Ray writes its Grafana provisioning when the head starts: wait for it.
for _ in $(seq 60); do
    [[ -f "$SESSION/metrics/grafana/grafana.ini" ]] && break
    sleep 1
done

sed "s#/tmp/ray/prom_metrics_service_discovery.json#$RAY_TMP/prom_metrics_service_discovery.json#" \
    "$REPO/dashboards/prometheus/prometheus.yml" > "$STATE/prometheus.yml"
nohup prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
    --web.listen-address=127.0.0.1:9090 > "$STATE/prometheus.log" 2>&1 &

cp "$REPO/dashboards/grafana/mammotune.json" "$SESSION/metrics/grafana/dashboards/"
# Grafana's documented GF_<SECTION>_<KEY> overrides, beside Ray's grafana.ini
GF_SERVER_HTTP_ADDR=127.0.0.1 GF_SERVER_HTTP_PORT=3000 \
GF_PATHS_DATA="$STATE/grafana" GF_PATHS_LOGS="$STATE" \
    nohup grafana server --homepath /usr/share/grafana \
    --config "$SESSION/metrics/grafana/grafana.ini" > "$STATE/grafana.log" 2>&1 &
echo "Prometheus on 127.0.0.1:9090, Grafana on 127.0.0.1:3000 (logs in $STATE)"
