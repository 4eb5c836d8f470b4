"""How a Spark driver is started, without importing pyspark: the driver JVM's options and class-data archive
(``jvm``), and the ``s3a`` jars and secret-free conf that let Spark reach an S3 bucket (``s3a``). Read by the
Spark session builder and by the DAGs' ``spark-submit`` lines alike.
"""
