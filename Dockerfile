# The Airflow image of docker-compose.yaml: the official image with hubflow's exact pins (requirements.txt).
# Not the runner image of the helm pods: that one is include/runner/Dockerfile.
# The tag's Airflow version is the apache-airflow pin of requirements.txt (tests/unit/test_compose.py checks it);
# dags/, plugins/ and include/ are mounted by docker-compose.yaml, not copied.
FROM apache/airflow:3.3.2-python3.11

# As the official image's docs say for extending it: name apache-airflow at the image's own version, so that pip
# fails instead of replacing Airflow if a pin ever disagreed.
COPY requirements.txt /requirements.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /requirements.txt \
 && mkdir -m 0770 /opt/airflow/auth /opt/airflow/cache

# The library is imported from the mounted plugins/ by every process (the init steps and `python -m hubflow.cli`
# too); git mirrors are kept in the hubflow-cache volume.
ENV PYTHONPATH=/opt/airflow/plugins \
    HUBFLOW_CACHE=/opt/airflow/cache
