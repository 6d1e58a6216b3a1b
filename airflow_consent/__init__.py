"""airflow-consent: consent and provenance gates for ML training DAGs, decided by Open Policy Agent."""

__version__ = "0.1.0"
