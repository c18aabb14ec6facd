"""Publication as a table commit: the pointers engines honour (an Iceberg table's snapshot, a Glue/Hive partition).

Each follows ``_LATEST.json`` (:mod:`airflow_bt.steps.pointer`): :mod:`.sync` moves every configured pointer to
the attempt the date's ``_LATEST.json`` names, only forward, so all of them agree after any interleaving of runs.
pyiceberg and boto3 are imported inside the functions that use them (never at DAG parse time).
"""
