#!/usr/bin/env bash
# `make demo`: demo data and model (made once), an Airflow home with SQLite, one nightly run.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${VENV:-.venv}
HOME_DIR=${AIRFLOW_HOME_DIR:-.airflow}
DS=${DS:-2026-06-24}
DATA="$REPO/demo-data"
PY="$VENV/bin/python"

mkdir -p "$HOME_DIR"
cat > "$HOME_DIR/activate" <<ENV
# source this file to use the demo's Airflow: \`source $HOME_DIR/activate\`
source "$REPO/$VENV/bin/activate"
export AIRFLOW_HOME="$REPO/$HOME_DIR"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_BT_ROOT="file://$DATA"
ENV
# shellcheck disable=SC1091
source "$HOME_DIR/activate"

if [ ! -d "$DATA/input/churn/dt=$DS" ] || [ ! -d "$DATA/input/churn_parquet/dt=$DS" ]; then
  echo "== making demo data (3 days x 100,000 customers) under $DATA/input/churn, and its Parquet copy"
  "$PY" -m airflow_bt.demo data --root "$DATA" --start 2026-06-22 --end 2026-06-24 --rows 100000 --files 4 --parquet
fi
if [ ! -f "$DATA/models/churn/model.tar.gz" ]; then
  echo "== training the demo model -> $DATA/models/churn/model.tar.gz"
  "$PY" -m airflow_bt.demo model --out "$DATA/models/churn"
fi

echo "== Airflow $(airflow version 2>/dev/null | tail -n 1) home: $AIRFLOW_HOME (SQLite)"
airflow db migrate > "$HOME_DIR/db-migrate.log" 2>&1 || { cat "$HOME_DIR/db-migrate.log"; exit 1; }
airflow dags reserialize > "$HOME_DIR/reserialize.log" 2>&1 || { cat "$HOME_DIR/reserialize.log"; exit 1; }

echo "== airflow dags test churn_nightly_scoring $DS"
start=$(date +%s.%N)
if ! airflow dags test churn_nightly_scoring "$DS" > "$HOME_DIR/dags-test.log" 2>&1; then
  tail -n 60 "$HOME_DIR/dags-test.log"
  echo "the DAG run failed; the full log is $HOME_DIR/dags-test.log" >&2
  exit 1
fi
end=$(date +%s.%N)

echo
airflow-bt latest "file://$DATA/output/churn" --ds "$DS"
"$PY" -c "print('wall time        : %.1f s (airflow dags test, log: %s)' % ($end - $start, '$HOME_DIR/dags-test.log'))"
echo
airflow-bt table "file://$DATA/output/churn" --ds "$DS" --table scoring.churn || true
echo
airflow-bt runs "file://$DATA/output/churn" --ds "$DS" --table scoring.churn || airflow-bt runs "file://$DATA/output/churn" --ds "$DS"

echo
echo "== airflow dags test churn_parquet_nightly_scoring $DS (Parquet in, typed Parquet out)"
if ! airflow dags test churn_parquet_nightly_scoring "$DS" > "$HOME_DIR/dags-test-parquet.log" 2>&1; then
  tail -n 60 "$HOME_DIR/dags-test-parquet.log"
  echo "the DAG run failed; the full log is $HOME_DIR/dags-test-parquet.log" >&2
  exit 1
fi
airflow-bt latest "file://$DATA/output/churn_parquet" --ds "$DS"
airflow-bt table "file://$DATA/output/churn_parquet" --ds "$DS" --table scoring.churn_parquet || true
echo
echo "Use this Airflow afterwards: source $HOME_DIR/activate && airflow dags list"
