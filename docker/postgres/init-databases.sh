#!/bin/bash
# First start of the postgres service (an empty volume): Airflow's metadata DB and the decision
# ledger as separate databases, each owned by its own role, so Airflow's credentials cannot reach
# the ledger and the other way round.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v airflow_password="$AIRFLOW_DB_PASSWORD" -v ledger_password="$LEDGER_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE consent_ledger LOGIN PASSWORD :'ledger_password';
CREATE DATABASE consent_ledger OWNER consent_ledger;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE consent_ledger FROM PUBLIC;
SQL
