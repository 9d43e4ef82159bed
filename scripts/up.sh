#!/usr/bin/env bash
# Start Airflow standalone (UI :8080) and the MLflow UI (:5000) over the demo state in var/.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(.venv/bin/python -m mlcore airflow-env)"
logs="$MLCORE_HOME/logs"; mkdir -p "$logs"

if [ -f "$logs/airflow.pid" ] && kill -0 "$(cat "$logs/airflow.pid")" 2>/dev/null; then
  echo "Airflow already running (pid $(cat "$logs/airflow.pid"))"
else
  setsid airflow standalone >"$logs/airflow-standalone.log" 2>&1 &
  echo $! >"$logs/airflow.pid"
fi
if [ -f "$logs/mlflow.pid" ] && kill -0 "$(cat "$logs/mlflow.pid")" 2>/dev/null; then
  echo "MLflow already running (pid $(cat "$logs/mlflow.pid"))"
else
  tracking="${MLCORE_MLFLOW_TRACKING_URI:-sqlite:///$MLCORE_HOME/mlflow.db}"
  setsid mlflow server --backend-store-uri "$tracking" --host 127.0.0.1 --port 5000 \
    >"$logs/mlflow.log" 2>&1 &
  echo $! >"$logs/mlflow.pid"
fi

printf "waiting for Airflow"
for _ in $(seq 1 90); do
  if curl -fs http://localhost:8080/api/v2/monitor/health >/dev/null 2>&1; then break; fi
  printf "."; sleep 2
done
echo
curl -fs http://localhost:8080/api/v2/monitor/health >/dev/null || {
  echo "Airflow did not become healthy; see $logs/airflow-standalone.log"; exit 1; }
read -r airflow_url mlflow_url docs_url < <(.venv/bin/python -c \
  'from mlcore.settings import get_settings as g; s = g(); print(s.airflow_ui_url, s.mlflow_ui_url, s.data_docs_url)')
cat <<MSG
Airflow UI: $airflow_url   user: admin
  password: in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
MLflow UI:  $mlflow_url
Data Docs:  $docs_url/ (log in to Airflow first; menu Browse -> Data Docs)
Logs in $logs; stop both with: make down
MSG
