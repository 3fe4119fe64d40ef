#!/usr/bin/env bash
# Prometheus and Grafana on a Ray head, for the Ray dashboard's time series and the
# mammotune dashboard. Run after `ray start --head` (infra/aws/cluster.yaml does), with the
# same RAY_PROMETHEUS_HOST / RAY_GRAFANA_HOST / RAY_GRAFANA_IFRAME_HOST that `ray start` had:
#   - Prometheus with dashboards/prometheus/prometheus.yml, which scrapes every node through
#     the service-discovery file Ray's head keeps (autoscaled workers included);
#   - Grafana with the provisioning Ray generated for this session (its Prometheus data source
#     is RAY_PROMETHEUS_HOST; Ray's own dashboards) plus dashboards/grafana/mammotune.json.
# Both listen on 127.0.0.1 only: reach them through the SSH tunnel (README, "Watch it").
# Grafana has no anonymous access (Ray's grafana.ini turns it on: overridden here) and its
# admin password is generated on the head's first start, into $STATE/grafana-admin-password
# (mode 0600, kept across restarts; never printed, never in a command line):
#   ssh to the head (ray attach infra/aws/cluster.yaml), cat ~/monitoring/grafana-admin-password
# then log in to http://127.0.0.1:3000 as admin; the Ray dashboard's embedded charts show once
# the browser has logged in.
set -euo pipefail

REPO=${MAMMOTUNE_HOME:-/opt/mammotune}
RAY_TMP=${RAY_TMP:-/tmp/ray}
SESSION="$RAY_TMP/session_latest"
STATE=${MONITORING_DIR:-$HOME/monitoring}
(umask 077 && mkdir -p "$STATE")
PASSWORD_FILE="$STATE/grafana-admin-password"

# Ray writes its Grafana provisioning when the head starts: wait for it.
for _ in $(seq 60); do
    [[ -f "$SESSION/metrics/grafana/grafana.ini" ]] && break
    sleep 1
done

sed "s#/tmp/ray/prom_metrics_service_discovery.json#$RAY_TMP/prom_metrics_service_discovery.json#" \
    "$REPO/dashboards/prometheus/prometheus.yml" > "$STATE/prometheus.yml"
nohup prometheus --config.file="$STATE/prometheus.yml" --storage.tsdb.path="$STATE/prometheus" \
    --web.listen-address=127.0.0.1:9090 > "$STATE/prometheus.log" 2>&1 &

# The admin password: made once, created 0600 (umask, and noclobber: never over a file
# that is there). Grafana sets it when it creates its database; a database made before the
# password file (the file deleted since) gets the new one through Grafana's CLI, on stdin.
if [[ ! -s "$PASSWORD_FILE" ]]; then
    rm -f "$PASSWORD_FILE"
    (umask 077 && set -o noclobber && python3 -c \
        'import secrets; print(secrets.token_urlsafe(24), end="")' > "$PASSWORD_FILE")
    if [[ -f "$STATE/grafana/grafana.db" ]]; then
        GF_PATHS_DATA="$STATE/grafana" grafana cli --homepath /usr/share/grafana \
            --config "$SESSION/metrics/grafana/grafana.ini" \
            admin reset-admin-password --password-from-stdin < "$PASSWORD_FILE"
    fi
fi

cp "$REPO/dashboards/grafana/mammotune.json" "$SESSION/metrics/grafana/dashboards/"
# Grafana's documented GF_<SECTION>_<KEY> overrides, beside (and over) Ray's grafana.ini,
# which enables anonymous viewers; __FILE: the value is read from that file.
GF_SERVER_HTTP_ADDR=127.0.0.1 GF_SERVER_HTTP_PORT=3000 \
GF_AUTH_ANONYMOUS_ENABLED=false GF_USERS_ALLOW_SIGN_UP=false \
GF_SECURITY_ADMIN_USER=admin GF_SECURITY_ADMIN_PASSWORD__FILE="$PASSWORD_FILE" \
GF_PATHS_DATA="$STATE/grafana" GF_PATHS_LOGS="$STATE" \
    nohup grafana server --homepath /usr/share/grafana \
    --config "$SESSION/metrics/grafana/grafana.ini" > "$STATE/grafana.log" 2>&1 &
echo "Prometheus on 127.0.0.1:9090, Grafana on 127.0.0.1:3000 (logs in $STATE)"
echo "Grafana: user admin, password in $PASSWORD_FILE on the head (no anonymous access)"
