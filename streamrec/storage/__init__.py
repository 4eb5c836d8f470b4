"""Bytes in and out: the bucket (a local folder or ``s3://``), the versioned model store, named parameter sets, and
ratings files read with pyarrow/pandas. Imports ``streamrec.core`` only; never pyspark.
"""
