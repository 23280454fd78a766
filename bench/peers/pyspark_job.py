"""The seed's shape in PySpark: Structured Streaming over JSON-lines files of base64 ImageEvent records,
a scalar pandas UDF that classifies each image at batch 1 with a per-worker cached ONNX Runtime session
(1 intra-op thread per task, `local[2]` runs 2 tasks), and a Parquet sink. Prints one JSON object: Spark
start-up time apart from the query's time, and every record's top-1 class index (read back from Parquet).

Usage: pyspark_job.py --model efficientnet-lite0 --input DIR_OF_JSONL --work DIR [--max-files-per-trigger 2]
"""
import argparse
import json
import os
import pathlib
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="efficientnet-lite0")
    parser.add_argument("--input", required=True, help="a directory of .jsonl files of ImageEvent records")
    parser.add_argument("--work", required=True, help="a fresh directory for the sink and the checkpoint")
    parser.add_argument("--max-files-per-trigger", type=int, default=2)
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()

    started = time.perf_counter()
    # The Python workers import the preprocessing from here (local mode: they inherit this environment).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    os.environ["FVISION_PEER_MODEL"] = args.model
    sys.path.insert(0, str(HERE))

    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import IntegerType, StringType, StructField, StructType

    spark = (
        SparkSession.builder.master(args.master)
        .appName("fvision-seed-shape-peer")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.python.worker.reuse", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    startup_s = time.perf_counter() - started

    schema = StructType(
        [
            StructField("id", StringType()),
            StructField("source", StringType()),
            StructField("uri", StringType()),
            StructField("content_type", StringType()),
            StructField("data", StringType()),
            StructField("event_time", StringType()),
        ]
    )

    @pandas_udf(IntegerType())
    def classify(data: pd.Series) -> pd.Series:
        import peer_worker

        return data.map(peer_worker.classify_base64).astype("int32")

    work = pathlib.Path(args.work)
    stream = (
        spark.readStream.schema(schema)
        .option("maxFilesPerTrigger", args.max_files_per_trigger)
        .json(args.input)
        .select("id", classify(F.col("data")).alias("class_index"), F.current_timestamp().alias("processed_at"))
    )
    t0 = time.perf_counter()
    query = (
        stream.writeStream.format("parquet")
        .option("path", str(work / "out"))
        .option("checkpointLocation", str(work / "checkpoint"))
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    query_s = time.perf_counter() - t0
    rows = spark.read.parquet(str(work / "out")).select("id", "class_index").collect()
    labels = {row["id"]: int(row["class_index"]) for row in rows}
    batches = len(query.recentProgress)
    spark.stop()
    json.dump(
        {
            "peer": "pyspark",
            "model": args.model,
            "startup_s": startup_s,
            "query_s": query_s,
            "images": len(labels),
            "micro_batches": batches,
            "process_s": time.perf_counter() - started,
            "labels": labels,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
