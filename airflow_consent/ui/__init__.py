"""The consent decisions pages: a FastAPI app the plugin mounts under ``/consent`` in the API server.

Imported only by the plugin (``airflow_consent.plugin``), never by the operators: it loads FastAPI and
Airflow's API security code, which a DAG file must not pay for at parse time.
"""
