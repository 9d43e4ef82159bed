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
cat <<MSG
Airflow UI: http://localhost:8080   user: admin
  password: in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
MLflow UI:  http://localhost:5000
Data Docs:  http://localhost:8080/data-docs/ (also $MLCORE_HOME/lake/validation/data_docs/index.html)
Logs in $logs; stop both with: make down
MSG
