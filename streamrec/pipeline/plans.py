"""What a DAG task hands a Spark job: the ``jobs/*.py`` argv, the plan dict the task returns (its XCom, which the
downstream tasks read), and the spark-submit conf a worker adds when the job starts (driver JVM options, s3a).

Plain inputs in, plain data out: a bucket and store, the run's ``params`` as a mapping (the trigger form's
values), ids; no Airflow, no pyspark, so every function here is unit-tested without either. The DAG files call
these and wire the results to operators.

Hyper-parameters: each field is taken from the form when it is not ``None``, else from the named parameter set
(``param_set``), else (retrain) the current model's, else the built-in default (:mod:`streamrec.storage.paramsets`);
the argv carries the resolved values (``BootstrapParams.to_argv``, parsed back by the job's
``BootstrapParams.add_arguments``) and the set's lineage (``--param-set NAME@DIGEST``).

A plan dict (every key JSON)::

    {"bucket": uri, "version": candidate id, "scale": "LOW:HIGH:STEP",
     "argv": the fit or update job's argv, "evaluate_argv": jobs/evaluate.py's (bootstrap, retrain),
     "expected_current": the version the pointer must still name at publish time,
     "gate": {"published": version judged against or None, "ceiling", "tolerance", "baseline"},
     "hyper": {"values": {...}, "sources": {field: "explicit" | "set" | "model" | "default"}, "param_set": ...},
     ...: what the DAG's own tasks need (``rows``, ``partitions``, ``checked``, ``validation``)}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streamrec.core.params import BootstrapParams, RankingRule, UpdateParams, param_specs
from streamrec.core.schema import RatingScale
from streamrec.core.search import tuned_fields
from streamrec.launch import jvm, s3a
from streamrec.pipeline.forms import PARTS, field_names
from streamrec.pipeline.tasks import HISTORY, bucket_uri, scale_of
from streamrec.storage import paramsets
from streamrec.storage.bucket import Bucket
from streamrec.storage.store import ModelStore


class NoModelError(LookupError):
    """A plan needs a published model and the bucket has none."""


# ------------------------------------------------------------------------------------------------------------
# hyper-parameters: form > parameter set > (model) > built-in default
# ------------------------------------------------------------------------------------------------------------
def given(params: Mapping[str, Any], part: str) -> dict[str, Any]:
    """The form's values of ``part``'s fields (``None``: not given)."""
    return {name: params.get(name) for name in field_names(part)}


def resolve_hyper(
    bucket: Bucket | str, params: Mapping[str, Any], part: str, fallback: dict | None = None
) -> tuple[Any, dict | None, dict[str, str]]:
    """``(dataclass, lineage entry or None, sources)`` of ``part`` for a run with these form ``params``."""
    return paramsets.resolve_in_bucket(bucket, params.get("param_set"), part, given(params, part), fallback)


def resolve_ranking(params: Mapping[str, Any], fallback: dict | None = None) -> RankingRule:
    """The ranking rule of a fit: each field from the form when given, else ``fallback`` (a manifest's
    ``ranking``: a retrain keeps the current model's rule), else the built-in default (``ranking.DEFAULT``)."""
    base = RankingRule.from_dict(fallback) if fallback else RankingRule()
    given = {s.name: params[s.name] for s in param_specs(RankingRule) if params.get(s.name) is not None}
    return RankingRule.from_dict({**base.as_dict(), **given})  # bounds checked: ValueError names the field


def _hyper(hp: Any, lineage: dict | None, sources: dict[str, str]) -> dict:
    return {"values": hp.as_dict(), "sources": sources, "param_set": lineage}


# ------------------------------------------------------------------------------------------------------------
# argv of the jobs
# ------------------------------------------------------------------------------------------------------------
def bootstrap_argv(
    bucket: str,
    ratings: Sequence[str],
    version: str,
    scale: str,
    params: BootstrapParams,
    *,
    kind: str = "bootstrap",
    partition_ids: Iterable[str] = (),
    holdout_fraction: float | None = None,
    holdout_seed: int | None = None,
    validation_uri: str | None = None,
    lineage: dict | None = None,
    ranking: RankingRule | None = None,
) -> list[str]:
    """``jobs/bootstrap.py``'s argv: fit ``ratings`` (in order) as candidate ``version``, recording ``ranking``
    (default: the job's, ``ranking.DEFAULT``) as its ranking rule.

    ``holdout_fraction`` (> 0) keeps that share of every batch out of training (split by ``holdout_seed``) into
    ``validation_uri`` (default: the job's ``BUCKET/validation``); ``partition_ids`` are the partitions the
    ratings include (a retrain's lineage)."""
    argv = ["--bucket", bucket, "--version", version, "--kind", kind, "--scale", str(scale)]
    for uri in ratings:
        argv += ["--ratings", uri]
    for pid in partition_ids:
        argv += ["--partition-id", pid]
    if holdout_fraction:
        argv += ["--holdout-fraction", str(holdout_fraction)]
        if holdout_seed is not None:
            argv += ["--holdout-seed", str(holdout_seed)]
        if validation_uri:
            argv += ["--validation-uri", validation_uri]
    ranking_argv = ranking.to_argv() if ranking is not None else []
    return [*argv, *params.to_argv(), *ranking_argv, *paramsets.lineage_argv(lineage)]


def update_argv(
    bucket: str,
    base: str,
    version: str,
    partitions: Sequence[tuple[str, str]],
    scale: str,
    params: UpdateParams,
    *,
    evaluate: bool = True,
    lineage: dict | None = None,
) -> list[str]:
    """``jobs/update.py``'s argv: apply ``partitions`` (``(id, uri)``, in this order) to ``base`` as candidate
    ``version``; ``evaluate``: score it on its validation set in the same Spark application."""
    if not partitions:
        raise ValueError("an update needs at least one partition")
    argv = ["--bucket", bucket, "--base", base, "--version", version]
    for pid, uri in partitions:
        argv += ["--partition", f"{pid}={uri}"]
    argv += ["--scale", str(scale)]
    if evaluate:
        argv.append("--evaluate")
    return [*argv, *params.to_argv(), *paramsets.lineage_argv(lineage)]


def evaluate_argv(bucket: str, version: str, scale: str) -> list[str]:
    """``jobs/evaluate.py``'s argv: score ``version`` on its own validation set."""
    return ["--bucket", bucket, "--version", version, "--scale", str(scale)]


def prepare_argv(bucket: str, run: str) -> list[str]:
    """``jobs/tune_trial.py prepare``: the tuning run's data, once."""
    return ["prepare", "--bucket", bucket, "--run", run]


def trial_argv(part: str, bucket: str, run: str, trial: int, values: Mapping[str, Any]) -> list[str]:
    """``jobs/tune_trial.py <part>``: one trial with the full parameter dict ``values`` (validated here)."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {sorted(PARTS)}, got {part!r}")
    hp = PARTS[part].from_dict(dict(values))
    return [part, "--bucket", bucket, "--run", run, "--trial", str(trial), *hp.to_argv()]


# ------------------------------------------------------------------------------------------------------------
# the plans (a plan task's XCom)
# ------------------------------------------------------------------------------------------------------------
def bootstrap_plan(
    bucket: Bucket,
    store: ModelStore,
    params: Mapping[str, Any],
    version: str,
    rows: int,
    uri: str | None = None,
) -> dict:
    """The bootstrap DAG's plan: fit ``ratings/history`` as ``version``, hold out ``holdout_fraction`` (split by
    the resolved seed), gate on ``rmse_ceiling`` and the biases-only baseline (a fresh start: not compared with
    a published model). ``uri``: the bucket as the jobs name it (default ``$STREAMREC_BUCKET``)."""
    uri = uri or bucket_uri()
    scale = str(RatingScale.parse(params["scale"]))
    hp, lineage, sources = resolve_hyper(bucket, params, "bootstrap")
    rule = resolve_ranking(params)
    argv = bootstrap_argv(
        uri,
        [bucket.spark_uri(HISTORY)],
        version,
        scale,
        hp,
        holdout_fraction=params["holdout_fraction"],
        holdout_seed=hp.seed,
        lineage=lineage,
        ranking=rule,
    )
    return {
        "bucket": uri,
        "version": version,
        "scale": scale,
        "argv": argv,
        "evaluate_argv": evaluate_argv(uri, version, scale),
        "expected_current": store.current(),
        "rows": rows,
        "hyper": _hyper(hp, lineage, sources),
        "ranking": rule.as_dict(),
        "gate": {"published": None, "ceiling": params["rmse_ceiling"], "tolerance": 0.0, "baseline": True},
    }


def update_plan(
    bucket: Bucket,
    found: Mapping[str, Any],
    selected: Mapping[str, Any],
    params: Mapping[str, Any],
    version: str,
    uri: str | None = None,
) -> dict:
    """The update DAG's plan: apply the partitions ``selected`` (``pipeline.check_and_select``, in arrival
    order) to ``found["base"]`` (``pipeline.pending``) as ``version``, gated against the base with
    ``tolerance`` and ``rmse_ceiling``. The job does not evaluate the candidate (no ``--evaluate``): the gate
    scores it on its validation set in numpy anyway (``pipeline.gate_numbers``) and records those numbers, so a
    Spark pass over the same rows would only repeat them on the hot path."""
    uri = uri or bucket_uri()
    parts = list(selected["partitions"])
    hp, lineage, sources = resolve_hyper(bucket, params, "update")
    argv = update_argv(
        uri,
        found["base"],
        version,
        [(p["id"], bucket.spark_uri(p["key"])) for p in parts],
        selected["scale"],
        hp,
        evaluate=False,
        lineage=lineage,
    )
    return {
        "bucket": uri,
        "version": version,
        "scale": selected["scale"],
        "argv": argv,
        "partitions": [p["id"] for p in parts],
        "expected_current": found["base"],
        "checked": list(selected.get("checked") or []),
        "hyper": _hyper(hp, lineage, sources),
        "gate": {
            "published": found["base"],
            "ceiling": params["rmse_ceiling"],
            "tolerance": params["tolerance"],
            "baseline": False,
        },
    }


def retrain_plan(
    bucket: Bucket, store: ModelStore, params: Mapping[str, Any], version: str, uri: str | None = None
) -> dict:
    """The retrain DAG's plan: refit the current model's ``inputs`` (history + applied partitions, in order) as
    ``version``, with the same hold-out split (the held-out rows stay out), judged on the current model's
    validation set. Each hyper-parameter: form > parameter set > the current model's > built-in default.
    ``NoModelError`` when nothing is published."""
    uri = uri or bucket_uri()
    current = store.current()
    if current is None:
        raise NoModelError("no published model to retrain: run streamrec_bootstrap first")
    m = store.read_manifest(current)
    hold = m.get("holdout") or {}
    fallback = (m.get("params") or {}).get("bootstrap", {})
    hp, lineage, sources = resolve_hyper(bucket, params, "bootstrap", fallback=fallback)
    rule = resolve_ranking(params, m.get("ranking"))
    scale = str(scale_of(store, current))
    argv = bootstrap_argv(
        uri,
        list(m.get("inputs", [])),
        version,
        scale,
        hp,
        kind="retrain",
        partition_ids=m.get("partitions", []),
        holdout_fraction=hold.get("fraction"),
        holdout_seed=hold.get("seed"),
        validation_uri=hold.get("uri"),
        lineage=lineage,
        ranking=rule,
    )
    return {
        "bucket": uri,
        "version": version,
        "scale": scale,
        "argv": argv,
        "evaluate_argv": evaluate_argv(uri, version, scale),
        "expected_current": current,
        "inputs": len(m.get("inputs", [])),
        "partitions": list(m.get("partitions", [])),
        "validation": m.get("validation", []),
        "hyper": _hyper(hp, lineage, sources),
        "ranking": rule.as_dict(),
        "gate": {
            "published": current,
            "ceiling": params["rmse_ceiling"],
            "tolerance": params["tolerance"],
            "baseline": True,
        },
    }


def tuning_jobs(tuning_plan: Mapping[str, Any], run: str, uri: str | None = None) -> dict:
    """The tuning DAG's jobs for a plan of ``streamrec.pipeline.tuning.make_plan``: the prepare argv and one
    spec per trial (``application_args``, ``deadline``, ``trial_label``: the keyword arguments of a mapped
    trial operator)."""
    uri = uri or bucket_uri()

    def specs(part: str) -> list[dict]:
        out = []
        for k, values in enumerate(tuning_plan["trials"][part]):
            label = f"{k}: " + " ".join(f"{n}={values[n]}" for n in tuned_fields(part))
            argv = trial_argv(part, uri, run, k, values)
            out.append({"application_args": argv, "deadline": tuning_plan["deadline"], "trial_label": label})
        return out

    return {
        "run": run,
        "prepare_args": prepare_argv(uri, run),
        "bootstrap_trials": specs("bootstrap"),
        "update_trials": specs("update"),
    }


# ------------------------------------------------------------------------------------------------------------
# spark-submit conf added where the task runs (docs/S3.md)
# ------------------------------------------------------------------------------------------------------------
AWS_SECRET_VARS = s3a.SECRET_VARS
"""The ``AWS_*`` variables whose values are secret (to register with a log masker)."""

DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"


def with_driver_java_options(conf: Mapping[str, str] | None) -> dict[str, str]:
    """``conf`` plus the driver JVM's start-up options for this machine (``streamrec.launch.jvm``: the
    class-data archive lives in the worker's virtualenv, so it is looked up where the job starts); options
    already in ``conf`` are kept."""
    out = dict(conf or {})
    if DRIVER_JAVA_OPTIONS not in out:
        out[DRIVER_JAVA_OPTIONS] = jvm.driver_java_options()
    return out


def uses_s3(*uris: object) -> bool:
    """True when any argument is (or contains) an ``s3://`` / ``s3a://`` URI."""
    return s3a.uses_s3(*uris)


def aws_env_from_connection(login: str | None, password: str | None, extra: Mapping | None) -> dict[str, str]:
    """The ``AWS_*`` variables an Airflow AWS connection's fields describe (``streamrec.launch.s3a``)."""
    return s3a.env_from_connection(login, password, extra)


def with_s3a(
    conf: Mapping[str, str] | None, jars: str | None, env: Mapping[str, str] | None = None
) -> tuple[dict[str, str], str | None]:
    """``(conf, jars)`` of a spark-submit that reads ``s3://``: the s3a jars appended to ``jars`` and the
    secret-free ``fs.s3a.*`` conf under ``conf`` (a key already in ``conf`` wins), from ``env`` (default: this
    process's environment). Credentials never go here: they reach spark-submit through its environment only.
    Raises ``streamrec.launch.s3a.S3AUnavailable`` when the hadoop-aws jars are neither fetched nor provided."""
    extra = s3a.spark_conf(env)
    s3a_jars = extra.pop("spark.jars", None)
    merged = {**extra, **(conf or {})}
    if s3a_jars:
        jars = ",".join(filter(None, [jars, s3a_jars]))
    return merged, jars
