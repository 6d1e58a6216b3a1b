"""Evidence from the data itself: what a partition contains, measured.

- ``config``: the per-dataset evidence configuration (``<dataset_config_path>/<dataset>.json``).
- ``arrow``: row count, distinct subjects, consent-flag coverage, rows collected after consent ended,
  streamed record batch by record batch with Arrow compute.
- ``revocations``: revocation lists (Parquet, CSV, a database table), read once per evaluation.
- ``expectations``: the dataset's Great Expectations suite, run per partition (GX imported only there).
- ``collector``: ``EvidenceCollector``, which the gate uses to measure all of the above.

Nothing here is imported when a DAG file is parsed: the gate imports it when it runs.
"""
