"""The three things a job does, as plain functions: bootstrap a version, update one, evaluate one.

Each reads its inputs, calls the pure model functions, and writes a candidate version (or its metrics) through
the ``ModelStore``. ``jobs/*.py`` are argv wrappers around these; ``bench/`` and the tests call them directly,
so a benchmark runs the job's own code path.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from streamrec.core import ranking
from streamrec.core.params import BootstrapParams, UpdateParams
from streamrec.core.ranking import RankingRule
from streamrec.core.schema import HALF_STAR, RatingScale
from streamrec.spark import evaluate, recommend, seen, split, update
from streamrec.spark.model import FactorModel, load_model, write_model
from streamrec.spark.ratings import read_ratings
from streamrec.spark.schema import RATINGS_SCHEMA
from streamrec.storage.store import PUBLISHED, RECOMMENDATIONS, SEEN, ModelStore

log = logging.getLogger(__name__)


class AlreadyApplied(ValueError):
    """A partition is already in the base version's lineage: applying it twice is refused."""


def exit_on_user_error(main: Callable[[], int]) -> int:
    """Run a job's ``main``; an error the user can act on (bad input, a refused partition, a missing version)
    becomes one ``streamrec: error: ...`` line on stderr and exit status 2, not a JVM-sized traceback."""
    from streamrec.core.ratings_format import RatingsFormatError
    from streamrec.storage.store import StoreError

    try:
        return main()
    except (AlreadyApplied, RatingsFormatError, StoreError, LookupError, ValueError) as exc:
        print(f"streamrec: error: {exc}", file=sys.stderr, flush=True)
        return 2


@dataclass(frozen=True)
class Holdout:
    """Keep ``fraction`` of every batch out of training (``streamrec.spark.split``), written under ``uri/<name>``."""

    uri: str
    fraction: float = 0.1
    seed: int = 42

    def as_dict(self) -> dict:
        return {"uri": self.uri, "fraction": self.fraction, "seed": self.seed}


def _hold_out(df: DataFrame, holdout: Holdout | None, name: str | None) -> tuple[DataFrame, list[str]]:
    """Split off the held-out rows of one batch and write them under ``name`` (not written when ``name`` is None:
    a retrain re-reads rows whose held-out share is already stored). Returns (train rows, [validation URI])."""
    if holdout is None or holdout.fraction <= 0:
        return df, []
    train, held = split.split(df, holdout.fraction, holdout.seed)
    if name is None:
        return train, []
    uri = holdout.uri.rstrip("/") + "/" + name
    held.select(*RATINGS_SCHEMA.fieldNames()).write.mode("overwrite").parquet(uri)
    return train, [uri]


def side_tables(
    model: FactorModel, seen_table: DataFrame | None, rule: RankingRule, scale: RatingScale
) -> tuple[dict[str, DataFrame], dict]:
    """The optional tables a job writes with its version (``write_model``'s ``extra``): the seen table and the
    recommendations (``streamrec.spark.recommend``; none when ``rule.top_k`` is 0 or the seen items are unknown),
    both lazy (computed by their writes, in that order: the seen table is persisted by its write for the
    recommendations to read, until ``_release``), and what to record in the manifest's ``ranking`` entry (the
    rule; the seconds are the writes', in the manifest's ``write_seconds``)."""
    tables: dict[str, DataFrame] = {}
    info: dict = {**rule.as_dict(), "seen": seen_table is not None, "recommendations": False}
    if seen_table is None:
        log.warning(
            "no seen table (the base version has none): writing neither seen items nor recommendations"
        )
        return tables, info
    tables[SEEN] = seen_table.persist()
    if rule.top_k > 0:
        tables[RECOMMENDATIONS] = recommend.recommend_all(model, tables[SEEN], rule, (scale.low, scale.high))
        info.update(recommendations=True)
    return tables, info


def _release(tables: dict[str, DataFrame]) -> None:
    for df in tables.values():
        df.unpersist()


def bootstrap_version(
    spark: SparkSession,
    store: ModelStore,
    ratings: Sequence[str],
    params: BootstrapParams | None = None,
    version: str | None = None,
    scale: RatingScale = HALF_STAR,
    kind: str = "bootstrap",
    partitions: Sequence[str] = (),
    extra: dict | None = None,
    holdout: Holdout | None = None,
    param_set: dict | None = None,
    rule: RankingRule | None = None,
) -> dict:
    """Fit a model on the ``ratings`` URIs and write it as a candidate version. Returns its manifest.

    With ``holdout``, its share of the ratings is written to the validation area and not trained on.
    ``param_set`` (``{"name", "digest"}``, see ``streamrec.storage.paramsets``) is recorded as the lineage of ``params``.
    The version also gets its seen table (every rating read, held-out ones included: the user did rate them) and
    the top-``rule.top_k`` recommendations of every user (``rule``: default ``streamrec.core.ranking.DEFAULT``),
    recorded with the rule as the manifest's ``ranking``.
    """
    p = params or BootstrapParams()
    rule = rule or ranking.DEFAULT
    t0 = time.perf_counter()
    everything = read_ratings(spark, list(ratings), scale)
    df, validation = _hold_out(everything, holdout, "history" if kind == "bootstrap" else None)
    from streamrec.spark import bootstrap  # pyspark.ml: not imported by the update path (its hot path)

    model = bootstrap.fit(df, p)
    fit_seconds = round(time.perf_counter() - t0, 3)
    tables, ranking_info = side_tables(model, seen.build(everything), rule, scale)
    vid = write_model(
        store,
        model,
        {
            "kind": kind,
            "parent": None,
            "params": {
                "bootstrap": p.as_dict(),
                "scale": str(scale),
                **({"param_set": {"bootstrap": param_set}} if param_set else {}),  # tuning lineage
            },
            "partitions": list(partitions),
            "inputs": list(ratings),
            "validation": validation,
            "holdout": holdout.as_dict() if holdout else None,
            "metrics": {"fit_seconds": fit_seconds},
            "ranking": ranking_info,
            **(extra or {}),
        },
        version,
        extra=tables,
    )
    _release(tables)
    return store.read_manifest(vid)


def update_version(
    spark: SparkSession,
    store: ModelStore,
    partitions: Sequence[tuple[str, str]],
    base: str | None = None,
    params: UpdateParams | None = None,
    version: str | None = None,
    scale: RatingScale = HALF_STAR,
    model: FactorModel | None = None,
    param_set: dict | None = None,
    rule: RankingRule | None = None,
) -> tuple[dict, FactorModel]:
    """Fold ``partitions`` (``(partition_id, uri)`` pairs, in order) into ``base`` (default: the current version).

    Refuses (``AlreadyApplied``) a partition id already in the base's lineage. Records the prequential metrics
    of each partition (the model before absorbing it). ``model`` may pass the base already loaded (benchmarks).
    ``param_set`` (``{"name", "digest"}``) is recorded as ``params.param_set.update`` (the base's bootstrap entry
    is inherited).
    The base's seen table is folded forward with the batch's ratings (``streamrec.spark.seen.merge``; none when
    the base has none) and the new model's recommendations are written with it, ranked by ``rule`` (default: the
    base's recorded rule, else ``streamrec.core.ranking.DEFAULT``).
    Returns the new candidate manifest and the updated model.
    """
    p = params or UpdateParams()
    base = base or store.current()
    if base is None:
        raise LookupError(f"no base version: {store} has no published model; bootstrap first")
    base_manifest = store.read_manifest(base)
    done = set(base_manifest.get("partitions", []))
    ids = [pid for pid, _ in partitions]
    dup = [pid for pid in ids if pid in done] + [pid for i, pid in enumerate(ids) if pid in ids[:i]]
    if dup:
        raise AlreadyApplied(
            f"partition(s) {dup} already applied in lineage of {base}; refusing to apply twice"
        )
    current = model if model is not None else load_model(store, spark, base)
    hold = Holdout(**base_manifest["holdout"]) if base_manifest.get("holdout") else None
    validation = list(base_manifest.get("validation", []))
    t0 = time.perf_counter()
    # The whole batch is read and validated in one job, held out in one write, and scored (prequential) and
    # absorbed partition after partition in one more (update.apply_batch): a few jobs per batch, not per partition.
    everything = read_ratings(spark, [uri for _, uri in partitions], scale, source="seq").localCheckpoint()
    batch, held = _hold_out(everything, hold, _holdout_name(ids))
    validation += held
    # ``batch`` is a deterministic filter (the hold-out hash) of the checkpointed read: no second checkpoint
    current, scores = update.apply_batch(current, batch, len(ids), p, scale, checkpoint=False)
    prequential = dict(zip(ids, scores, strict=True))
    seconds = round(time.perf_counter() - t0, 3)
    if rule is None:
        rule = (
            RankingRule.from_dict(base_manifest["ranking"])
            if base_manifest.get("ranking")
            else ranking.DEFAULT
        )
    old_seen = seen.load(store, spark, base)
    new_seen = seen.merge(old_seen, everything, "seq") if old_seen is not None else None
    tables, ranking_info = side_tables(current, new_seen, rule, scale)
    vid = write_model(
        store,
        current,
        {
            "kind": "update",
            "parent": base,
            "params": _param_set_lineage(  # tuning lineage (streamrec.storage.paramsets)
                {**base_manifest.get("params", {}), "update": p.as_dict(), "scale": str(scale)}, param_set
            ),
            "partitions": list(base_manifest.get("partitions", [])) + ids,
            "inputs": list(base_manifest.get("inputs", [])) + [uri for _, uri in partitions],
            "validation": validation,
            "holdout": base_manifest.get("holdout"),
            "metrics": {"prequential": prequential, "update_seconds": seconds},
            "ranking": ranking_info,
        },
        version,
        extra=tables,
    )
    _release(tables)
    return store.read_manifest(vid), current


def _holdout_name(partition_ids: Sequence[str]) -> str:
    """Where a batch's held-out rows go, under the hold-out URI: ``partitions/<id>`` for one partition,
    ``batches/<first id>-n<count>-<digest of the ids>`` for several (a retry of the same batch rewrites it)."""
    if len(partition_ids) == 1:
        return f"partitions/{partition_ids[0]}"
    digest = hashlib.sha256("\n".join(partition_ids).encode()).hexdigest()[:12]
    return f"batches/{partition_ids[0][:48]}-n{len(partition_ids)}-{digest}"


def _param_set_lineage(params: dict, param_set: dict | None) -> dict:
    """An update's ``params``: the base's ``param_set`` entries, with ``update`` replaced by this one's."""
    sets = dict(params.pop("param_set", None) or {})
    sets.pop("update", None)
    if param_set:
        sets["update"] = param_set
    return {**params, "param_set": sets} if sets else params


def evaluate_version(
    spark: SparkSession,
    store: ModelStore,
    version: str,
    holdout: Sequence[str] = (),
    train: Sequence[str] = (),
    scale: RatingScale = HALF_STAR,
    k: int = 10,
    model: FactorModel | None = None,
) -> dict:
    """RMSE/MAE (with fallback counts) on the ``holdout`` URIs, plus precision@k / NDCG@k when ``train`` is
    given (items rated in training are excluded from the ranking). Merged into the manifest's ``metrics``.
    Without ``holdout``, the version's own validation set (its manifest's ``validation`` list) is used."""
    m = model if model is not None else load_model(store, spark, version)
    manifest = store.read_manifest(version)
    holdout = list(holdout) or manifest.get("validation", [])
    if not holdout:
        raise ValueError(f"version {version} has no validation set and no --holdout was given")
    hold: DataFrame = read_ratings(spark, list(holdout), scale).cache()
    metrics = {"validation": evaluate.rmse(m, hold, scale)}
    if train:
        metrics["validation"].update(
            evaluate.ranking_metrics(m, read_ratings(spark, list(train), scale), hold, k)
        )
    merged = {**manifest.get("metrics", {}), **metrics}
    if manifest.get("status") != PUBLISHED:
        store.update_manifest(version, metrics=merged)
    hold.unpersist()
    return merged
