"""The bottom layer: pure rules and math (numpy, pandas, pyarrow; no pyspark, no boto3, no Airflow).

Parameters and their bounds (``params``), column names and the rating scale (``schema``), the model's arrays and
the one prediction rule (``arrays``), the streaming update's numeric core (``sgd``), the gate (``gate``), the
ratings-file rules (``ratings_format``), the bucket layout (``layout``), the hyper-parameter search
(``search``), the synthetic data generator (``synth``) and the failpoints (``faults``).
"""
