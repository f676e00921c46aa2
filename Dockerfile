# The same install as the README: pinned stack (constraints.txt), the project, one image for the webserver,
# the daemon and the code server (choose the command when running it). Not built in this repository's CI.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY mlops_assets ./mlops_assets
RUN pip install --no-cache-dir -U pip \
 && pip install --no-cache-dir -c constraints.txt .
COPY workspace.yaml dagster.yaml ./
COPY deploy ./deploy
ENV MLOPS_HOME=/var/lib/mlops DAGSTER_HOME=/var/lib/mlops/dagster
RUN mkdir -p $DAGSTER_HOME && cp deploy/dagster.yaml $DAGSTER_HOME/dagster.yaml
EXPOSE 3000 4266
CMD ["dagster", "code-server", "start", "-m", "mlops_assets.definitions", "-h", "0.0.0.0", "-p", "4266"]
