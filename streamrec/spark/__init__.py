"""Everything that needs a SparkSession, and the only part of streamrec that imports pyspark: the session and
its JVM options, the Spark reader of ratings files, the factor model as DataFrames, the bootstrap fit, the
streaming update, evaluation, the hold-out split, the jobs' bodies (``runs``) and tuning trials.
"""
