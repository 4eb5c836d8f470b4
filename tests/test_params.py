"""One definition per hyper-parameter: the bounds and words in the dataclass fields' metadata
(``streamrec.core.params``) are what ``__post_init__`` enforces, what the jobs' ``--help`` says, and what the DAG
forms' Params (``streamrec.pipeline.forms``) declare; Airflow's own Param validation refuses what the dataclass
refuses. The DAG files themselves are checked against this in ``tests/test_dags.py``."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from streamrec.core.params import BootstrapParams, ParamSpec, UpdateParams, param_specs
from streamrec.pipeline import forms

pytestmark = pytest.mark.unit

CLASSES = {"bootstrap": BootstrapParams, "update": UpdateParams}


# ------------------------------------------------------------------------------------------------------------
# the metadata and the dataclass's own validation
# ------------------------------------------------------------------------------------------------------------
def test_every_field_has_words_and_a_type():
    for cls in CLASSES.values():
        for spec in param_specs(cls):
            assert spec.kind in ("integer", "number"), spec
            assert spec.title and spec.doc, f"{cls.__name__}.{spec.name} needs a title and a doc"
            assert spec.problem(spec.default) is None, f"the default of {spec.name} breaks its own bounds"


def test_the_bounds_are_todays_rules():
    """The rules from before the metadata: counts >= 1, regularisation >= 0, lr in [0, 1], decay in (0, 1]."""
    b = {s.name: s for s in param_specs(BootstrapParams)}
    u = {s.name: s for s in param_specs(UpdateParams)}
    for name in ("rank", "iterations", "bias_iterations"):
        assert b[name].minimum == 1 and b[name].kind == "integer"
    for name in ("reg", "reg_user", "reg_item"):
        assert b[name].minimum == 0 and b[name].kind == "number"
    assert b["rank"].rule() == "in [1, 1000]"
    assert (u["lr"].minimum, u["lr"].maximum) == (0, 1)
    assert (u["decay"].exclusive_minimum, u["decay"].maximum, u["decay"].rule()) == (0, 1, "in (0, 1]")
    assert u["passes"].minimum == 0
    for name in ("reg", "reg_factors", "prior_weight", "fold_in_reg"):
        assert u[name].minimum == 0
    assert b["seed"].rule() == u["seed"].rule() == "any value"


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        (BootstrapParams, {"rank": 0}, "rank must be in [1, 1000], got 0"),
        (BootstrapParams, {"rank": 1001}, "rank must be in [1, 1000], got 1001"),
        (BootstrapParams, {"iterations": 0}, "iterations must be >= 1, got 0"),
        (BootstrapParams, {"bias_iterations": 0}, "bias_iterations must be >= 1, got 0"),
        (BootstrapParams, {"reg_item": -0.5}, "reg_item must be >= 0, got -0.5"),
        (BootstrapParams, {"rank": 2.5}, "rank must be a whole number (in [1, 1000]), got 2.5"),
        (BootstrapParams, {"iterations": True}, "iterations must be a whole number (>= 1), got True"),
        (BootstrapParams, {"reg": "0.1"}, "reg must be a number (>= 0), got '0.1'"),
        (BootstrapParams, {"reg": math.nan}, "reg must be >= 0, got nan"),
        (UpdateParams, {"lr": 1.5}, "lr must be in [0, 1], got 1.5"),
        (UpdateParams, {"lr": -0.1}, "lr must be in [0, 1], got -0.1"),
        (UpdateParams, {"decay": 0.0}, "decay must be in (0, 1], got 0.0"),
        (UpdateParams, {"decay": 1.01}, "decay must be in (0, 1], got 1.01"),
        (UpdateParams, {"passes": -1}, "passes must be >= 0, got -1"),
        (UpdateParams, {"fold_in_reg": -1.0}, "fold_in_reg must be >= 0, got -1.0"),
    ],
)
def test_out_of_bounds_is_refused_naming_field_and_rule(cls, values, message):
    with pytest.raises(ValueError) as err:
        cls(**values)
    assert str(err.value) == f"{cls.__name__}: {message}"


def test_edges_inside_the_bounds_are_accepted():
    assert BootstrapParams(rank=1, iterations=1, bias_iterations=1, reg=0, reg_user=0.0, reg_item=0).rank == 1
    assert BootstrapParams(rank=1000).rank == 1000
    assert UpdateParams(lr=0.0, passes=0, decay=1.0, reg=0.0).lr == 0.0
    assert UpdateParams(lr=1, decay=1e-9).decay == 1e-9
    assert BootstrapParams(seed=-3).seed == -3  # the seed is unbounded


def test_from_dict_takes_whole_floats_for_integer_fields():
    """JSON may carry ``20.0`` for an integer (JSON Schema counts it as one): taken as 20, not refused."""
    p = BootstrapParams.from_dict({"rank": 20.0, "iterations": 3, "reg": 1, "unknown": 5, "seed": None})
    assert p == BootstrapParams(rank=20, iterations=3, reg=1.0)
    assert isinstance(p.rank, int) and p.to_argv()[:2] == ["--rank", "20"]
    with pytest.raises(ValueError, match="rank must be a whole number"):
        BootstrapParams.from_dict({"rank": 20.5})


def test_param_specs_refuse_a_field_that_is_not_a_number():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Odd:
        name: str = field(default="x", metadata={"doc": "not a number"})

    with pytest.raises(TypeError, match="Odd.name: a hyper-parameter is an int or a float"):
        param_specs(Odd)


# ------------------------------------------------------------------------------------------------------------
# the jobs' flags carry the description
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", list(CLASSES.values()))
def test_job_flags_carry_the_description_bounds_and_default(cls):
    parser = argparse.ArgumentParser()
    cls.add_arguments(parser)
    actions = {a.dest: a for a in parser._actions}
    for spec in param_specs(cls):
        action = actions[spec.name]
        assert action.option_strings == ["--" + spec.name.replace("_", "-")]
        assert spec.doc in action.help and f"default {spec.default}" in action.help
        assert spec.rule() in action.help if spec.bounded else "any value" not in action.help
        assert action.default == spec.default
        assert action.type is (int if spec.kind == "integer" else float)
    # the round trip the DAG -> job line relies on
    hp = cls.from_dict({s.name: s.default for s in param_specs(cls)})
    assert cls.from_args(parser.parse_args(hp.to_argv())) == hp


def test_a_job_refuses_an_out_of_bounds_flag():
    parser = argparse.ArgumentParser()
    BootstrapParams.add_arguments(parser)
    with pytest.raises(ValueError, match="rank must be in"):
        BootstrapParams.from_args(parser.parse_args(["--rank", "0"]))


# ------------------------------------------------------------------------------------------------------------
# the forms' Params (plain JSON Schema dicts) and Airflow's validation of them
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("part", ["bootstrap", "update"])
def test_form_params_carry_each_fields_bounds(part):
    params = forms.hyper_params(part)
    assert list(params) == [f.name for f in param_specs(CLASSES[part])], "every field, in field order"
    for spec in param_specs(CLASSES[part]):
        p = params[spec.name]
        json.dumps(p)  # plain JSON: no Airflow, no dataclass inside
        assert p["default"] is None and p["type"] == ["null", spec.kind]
        assert p["title"] == spec.title
        assert spec.doc in p["description"]
        assert spec.rule() in p["description"] if spec.bounded else spec.rule() not in p["description"]
        assert str(spec.default) in p["description"], "says what an empty value stands for"
        assert p.get("minimum") == spec.minimum and p.get("maximum") == spec.maximum
        assert p.get("exclusiveMinimum") == spec.exclusive_minimum
        assert p.get("exclusiveMaximum") == spec.exclusive_maximum
    full = forms.hyper_form(part)
    assert full["param_set"]["default"] == forms.DEFAULT_SET == "tuned"
    assert "seed" not in forms.hyper_params(part, exclude=("seed",))


def test_form_constants_match_the_modules_they_mirror():
    """forms cannot import storage or tasks (parse time); the constants it mirrors must stay equal."""
    from streamrec.pipeline import tasks
    from streamrec.storage import paramsets

    assert forms.DEFAULT_SET == paramsets.DEFAULT_NAME
    assert forms.MAX_PARTITIONS_ENV == tasks.MAX_PARTITIONS_ENV
    assert list(forms.PARTS) == list(paramsets.PARTS)
    for part in forms.PARTS:
        assert forms.field_names(part) == paramsets.field_names(part)


def test_max_partitions_default(monkeypatch):
    monkeypatch.delenv(forms.MAX_PARTITIONS_ENV, raising=False)
    assert forms.max_partitions_default() == 1
    for text, want in [("7", 7), (" 3 ", 3), ("0", 1), ("-2", 1), ("lots", 1), ("2.5", 1)]:
        monkeypatch.setenv(forms.MAX_PARTITIONS_ENV, text)
        assert forms.max_partitions_default() == want, text


def _probes(spec: ParamSpec) -> list:
    """Values around every bound of ``spec``, plus wrong types."""
    values = [None, 0, 1, -1, 0.5, 1.5, 20.0, 1000, 1001, -0.001, True, "3"]
    for b in (spec.minimum, spec.maximum, spec.exclusive_minimum, spec.exclusive_maximum):
        if b is not None:
            values += [b, b - 1, b + 1, b - 1e-6, b + 1e-6]
    return values


@pytest.mark.parametrize("part", ["bootstrap", "update"])
def test_airflow_accepts_exactly_what_the_dataclass_accepts(part):
    """Every probe value: ``airflow.sdk.Param(**spec).resolve(v)`` succeeds iff ``from_dict({name: v})`` does
    (None: "not given", accepted by both)."""
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    cls = CLASSES[part]
    params = forms.hyper_params(part)
    disagree = []
    for spec in param_specs(cls):
        for v in _probes(spec):
            try:
                Param(**params[spec.name]).resolve(v)
                airflow_ok = True
            except ParamValidationError:
                airflow_ok = False
            try:
                cls.from_dict({spec.name: v})
                ours_ok = True
            except ValueError:
                ours_ok = False
            if airflow_ok != ours_ok:
                disagree.append((spec.name, v, airflow_ok, ours_ok))
    assert not disagree, disagree


def test_airflow_refuses_rank_zero_and_lr_above_one():
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    rank = Param(**forms.hyper_params("bootstrap")["rank"])
    lr = Param(**forms.hyper_params("update")["lr"])
    with pytest.raises(ParamValidationError, match="minimum of 1"):
        rank.resolve(0)
    with pytest.raises(ParamValidationError, match="maximum of 1"):
        lr.resolve(1.5)
    assert rank.resolve(None) is None and rank.resolve(8) == 8
    assert lr.resolve(0.5) == 0.5
