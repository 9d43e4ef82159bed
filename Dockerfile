# The platform image: Airflow 3.3.2 on Python 3.11 (the project's Python) plus mlcore and its
# pinned dependencies. docker-compose.yaml runs every Airflow service and the MLflow server
# from it; the Helm chart uses it as images.airflow (docs/deployment.md).

# Data Docs assets (Bootstrap, jQuery, ... pinned by the plugin's package-lock.json), so the
# pages need nothing from the internet; only node_modules is carried into the image.
FROM node:20-bookworm-slim AS data-docs-assets
WORKDIR /assets
COPY plugins/mlcore_ui_assets/package.json plugins/mlcore_ui_assets/package-lock.json plugins/mlcore_ui_assets/.npmrc ./
RUN npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error

FROM apache/airflow:3.3.2-python3.11

# Fashion-MNIST (the base training set and the frozen holdout) from Debian, at the path
# MLCORE_FMNIST_DIR defaults to: nothing is downloaded at run time. apt needs root, and so
# does /opt/mlcore (the package's build folder, handed to the `airflow` user).
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /opt/mlcore \
    && chown airflow:0 /opt/mlcore
USER airflow

# Dependencies in their own layer (they change far less often than the code), as the
# `airflow` user like the base image expects. requirements.txt pins apache-airflow==3.3.2, so
# pip cannot move Airflow away from the base; constraints.txt is the exact set the tests ran.
# torch comes from PyPI with its CUDA wheels, so one image serves CPU and `gpu` workers.
# For a CPU-only image (about 2 GB smaller), install torch first from the CPU wheel index:
#   RUN pip install --no-cache-dir torch==2.14.1 torchvision==0.29.1 \
#         --index-url https://download.pytorch.org/whl/cpu
# (2.14.1+cpu satisfies the ==2.14.1 pins, so the next step keeps it.)
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/mlcore/
RUN pip install --no-cache-dir -r /opt/mlcore/requirements.txt -c /opt/mlcore/constraints.txt

# The package itself; its dependencies are all installed above. README.md is its readme.
COPY --chown=airflow:0 pyproject.toml README.md /opt/mlcore/
COPY --chown=airflow:0 mlcore/ /opt/mlcore/mlcore/
RUN pip install --no-cache-dir --no-deps /opt/mlcore

# The committed Airflow settings (AIRFLOW_HOME is /opt/airflow); compose and Helm override
# the executor and connections through AIRFLOW__* variables.
COPY --chown=airflow:0 airflow.cfg /opt/airflow/airflow.cfg

# DAGs, plugin and suites baked in, so the image runs on Kubernetes without git-sync;
# compose mounts the checkout's folders over them.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --from=data-docs-assets --chown=airflow:0 /assets/node_modules /opt/airflow/plugins/mlcore_ui_assets/node_modules
COPY --chown=airflow:0 expectations/ /opt/airflow/expectations/
COPY --chown=airflow:0 tasks/ /opt/airflow/tasks/

# Mount points for MLCORE_HOME and the UI password file: created here, group 0 writable,
# so fresh named volumes inherit ownership any AIRFLOW_UID (group 0) can write to.
RUN mkdir -p /opt/airflow/var /opt/airflow/auth \
    && chmod -R g+rwX /opt/airflow/var /opt/airflow/auth

# Defaults that hold in every deployment of this image (compose and Helm may restate them).
ENV MLCORE_HOME=/opt/airflow/var \
    MLCORE_GX_SUITES_DIR=/opt/airflow/expectations/suites \
    MLCORE_TASKS_DIR=/opt/airflow/tasks \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false
