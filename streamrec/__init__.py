"""streamrec: batch ALS to bootstrap a biased factor model, streaming biased-SGD updates, data-quality and
accuracy gates, versioned publishing.

The layers, bottom to top (each may import only those below it; ``[tool.importlinter]`` in pyproject.toml)::

    streamrec.pipeline   what the DAGs, the review page and the CLIs call      | streamrec.spark   everything that
    streamrec.storage    bucket, model store, parameter sets, ratings files    |   needs a SparkSession (jobs/)
    streamrec.core       parameters, schema, model arrays and prediction rule, sgd, gate, file rules, layout

``pipeline`` and ``spark`` are independent of each other: the light Airflow tasks and the review page never load
pyspark, and the Spark jobs never load the pipeline's GX or report code.
"""
