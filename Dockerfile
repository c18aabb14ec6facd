# The image of the docker-compose stack: the official Airflow image extended with airflow_bt
# (Airflow's docker-stack docs, "Extending the image": pip install as the airflow user, with
# apache-airflow pinned so the install cannot change Airflow itself, and a constraints file).
#
# airflow_bt is installed editable from /opt/airflow_bt (its .pth puts /opt/airflow_bt on
# sys.path), so docker-compose.yaml can mount ./airflow_bt over /opt/airflow_bt/airflow_bt and
# edits show up without a rebuild; the console script and entry points come from the install.
# No credentials here: the stack gets them at run time from .env.
FROM apache/airflow:3.3.2-python3.11

USER airflow
COPY --chown=airflow:0 pyproject.toml README.md /opt/airflow_bt/
COPY --chown=airflow:0 constraints/airflow-3.3.2.txt /opt/airflow_bt/constraints/
COPY --chown=airflow:0 airflow_bt/ /opt/airflow_bt/airflow_bt/
RUN pip install --no-cache-dir --constraint /opt/airflow_bt/constraints/airflow-3.3.2.txt \
        "apache-airflow==${AIRFLOW_VERSION}" --editable "/opt/airflow_bt[demo]" \
    && airflow-bt --help > /dev/null \
    && install -d -m 0775 /opt/airflow/auth
