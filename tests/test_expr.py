"""The filter language (scaling_sweep.expr): escapes refused with no side effect, bounded work,
correct values on scalars and on table columns, and the grid, fit and sweep-name paths using it."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from scaling_sweep.expr import MAX_LENGTH, ExprError, evaluate, parse

# Each of these, run by Python's eval (or pandas' query), would create the file PWNED in the
# working directory; every one must be refused before anything runs.
ESCAPES = [
    (
        "[c for c in ().__class__.__mro__[1].__subclasses__() if c.__name__=='catch_warnings'][0]()"
        "._module.__builtins__['__import__']('os').system('touch PWNED') and False",
        "not allowed",
    ),
    ("__import__('os').system('touch PWNED')", "calls other than abs, min, max, log"),
    ("().__class__.__base__.__subclasses__()", "not allowed"),
    ("width.__class__", "not allowed"),  # attribute access; with dotted names, an underscored name
    ("x[0]", "subscripts"),
    ("[open('PWNED', 'w') for _ in [1]]", "comprehensions"),
    ("{open('PWNED', 'w') for _ in [1]}", "comprehensions"),
    ("any(open('PWNED', 'w') for _ in [1])", "calls other than"),
    ("(lambda: open('PWNED', 'w'))()", "calls other than"),
    ("lambda: open('PWNED', 'w')", "lambda"),
    ("f\"{open('PWNED', 'w')}\"", "f-strings"),
    ("(f := open('PWNED', 'w'))", "assignment (:=)"),
    ("max(*[open('PWNED', 'w')])", "starred"),
    ("max(1, 2, key=open)", "keyword arguments"),
    ("open('PWNED', 'w')", "calls other than"),
    ("getattr(width, '__class__')", "calls other than"),
    ("eval(\"open('PWNED', 'w')\")", "calls other than"),
    ("__builtins__", "names starting with '_'"),
    ("'{0.__class__}'.format(width)", "calls other than"),
    ("'%s' % width", "'%' needs numbers"),
    ("open('PWNED','w') if width else 0", "conditional expressions"),
    ("width in sizes", "literal list"),
    ("width & 1", "'&'"),
    ("{'a': 1}", "dicts"),
    ("b'x' == width", "bytes literals"),
    ("@os.system('touch PWNED')", "not a valid expression"),
]


@pytest.mark.parametrize("source, message", ESCAPES)
@pytest.mark.parametrize("dotted", [False, True])
def test_escapes_are_refused_with_one_line_and_no_side_effect(tmp_path, monkeypatch, source, message, dotted):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ExprError) as info:
        evaluate(source, {"width": 1.0, "x": [1], "sizes": [1, 2]}, dotted=dotted)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_dotted_names_read_only_the_mapping_never_attributes():
    assert evaluate("model.width > 1", {"model.width": 2.0}, dotted=True) is True
    with pytest.raises(ExprError, match="names starting with '_'"):
        parse("model.__class__", dotted=True)
    with pytest.raises(ExprError, match="unknown name 'model.widht' \\(did you mean 'model.width'\\?\\)"):
        evaluate("model.widht > 1", {"model.width": 2.0}, dotted=True)
    with pytest.raises(ExprError, match="attribute access"):
        parse("model.width > 1")  # tables have plain column names


@pytest.mark.parametrize(
    "source, message",
    [
        ("9**9**9", "too large"),
        ("'a'*10**9", "needs numbers, got the string 'a'"),
        ("2**10**6", "too large"),
        ("10**5000", "too large"),
        ("(10**1000)**10", "too large"),
        ("(10**1000) * (10**1000)", "over 4096 bits"),
        ("x" * 10**6, f"at most {MAX_LENGTH}"),
        ("-" * 900 + "1", "nests deeper"),
        ("(" * 300 + "1" + ")" * 300, "not a valid expression"),
        ("1 + " * 240 + "1", "nests deeper"),
        ("x in [" + "1," * 500 + "]", f"at most {MAX_LENGTH}"),
        ("x in [" + "1," * 420 + "]", "more than 400 parts"),
    ],
)
def test_denial_of_service_is_refused_fast(source, message):
    started = time.perf_counter()
    with pytest.raises(ExprError) as info:
        evaluate(source, {"x": 1})
    assert time.perf_counter() - started < 0.5
    assert message in str(info.value)
    assert "\n" not in str(info.value)


SCALARS = [
    ("1 < x < 3", True),
    ("1 < x > 3", False),
    ("0 < x <= 2 < 3", True),
    ("x == 2 and y == 'a'", True),
    ("x == 3 or y == 'b'", False),
    ("not x == 3", True),
    ("x in [1, 2] and y not in ('b', 'c')", True),
    ("x in [-2, -1]", False),
    ("x is None", False),
    ("z is None and x is not None", True),
    ("x + 1 == 3 and x - 3 == -1 and x * 3 == 6 and x / 4 == 0.5", True),
    ("7 // x == 3 and 7 % x == 1 and x ** 3 == 8 and -x == -2 and +x == 2", True),
    ("2 ** -1 == 0.5", True),
    ("y + 'b' == 'ab'", True),
    ("abs(-x) == 2 and min(x, 5, 3) == 2 and max(x, 5) == 5", True),
    ("log(x) > 0.69", True),
    ("x > 5 and 1 / (x - 2) > 0", False),  # and short-circuits: 1/0 is never computed
    ("x == 2 or 1 / (x - 2) > 0", True),
    ("True and not False and None is None", True),
]


@pytest.mark.parametrize("source, expected", SCALARS)
def test_scalars_evaluate_like_python(source, expected):
    assert evaluate(source, {"x": 2, "y": "a", "z": None}) is expected


@pytest.mark.parametrize(
    "source, message",
    [
        ("x / 0 > 1", "division by zero"),
        ("y < 1", "'<' not supported"),
        ("log(0) < 1", "log(0)"),
        ("y - 1", "needs numbers"),
        ("abs(y)", "abs() needs numbers"),
        ("max(x)", "max() takes at least 2"),
        ("x in [1] == 1", "chaining another comparison"),
        ("x is 1", "'is' other than 'is None'"),
        ("width >", "not a valid expression"),
    ],
)
def test_errors_say_what_is_wrong_in_one_line(source, message):
    with pytest.raises(ExprError) as info:
        evaluate(source, {"x": 2, "y": "a", "width": 1.0})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "width": [0.25, 0.5, 1.0, 2.0, 4.0],
            "data_fraction": [0.25, 0.25, 0.5, 1.0, 1.0],
            "dataset": ["cifar10", "mnist", "cifar10", None, "cifar100"],
            "n_train": [1000, 2000, 4000, 8000, 16000],
            "density": [1.0, np.nan, 0.8, 0.64, 0.5],
        },
        index=[10, 11, 12, 13, 14],  # not 0..n: masks must keep the table's own index
    )


def rows(table: pd.DataFrame, source: str) -> list[int]:
    mask = parse(source).evaluate({c: table[c] for c in table.columns})
    assert isinstance(mask, pd.Series) and mask.dtype == bool
    return list(table.index[mask.to_numpy()])


@pytest.mark.parametrize(
    "source, pandas_query",
    [
        ("width <= 0.5 and data_fraction <= 0.25", None),
        ("dataset == 'cifar10'", None),
        ("not width > 1 or dataset == 'cifar100'", None),
        ("0.25 < width <= 2", None),
        ("dataset in ['cifar10', 'mnist']", None),
        ("dataset not in ('cifar10',)", None),
        ("width * 2 ** 2 >= 4 - 1 and n_train // 1000 % 2 == 0", None),
        ("width > 1 and not (data_fraction < 1 or n_train > 10000)", None),
        ("max(width, data_fraction) > 0.5 and abs(-width) == width", "width > 0.5 or data_fraction > 0.5"),
        ("log(n_train) > log(3000)", "n_train > 3000"),
        ("density >= 0.64", None),
    ],
)
def test_columns_filter_like_pandas_query(table, source, pandas_query):
    assert rows(table, source) == list(table.query(pandas_query or source).index)


def test_columns_missing_values_and_scalar_results(table):
    assert rows(table, "dataset is None") == [13]
    assert rows(table, "density is not None") == [10, 12, 13, 14]
    assert rows(table, "True and width > 1") == [13, 14]
    assert rows(table, "False or width > 1") == [13, 14]
    assert parse("width > 100 and False").evaluate({"width": table["width"]}) is False
    array = parse("0.5 <= width < 4 and not width == 1").evaluate({"width": table["width"].to_numpy()})
    assert list(array) == [False, True, False, True, False]
    assert list(parse("width in [0.5, 4]").evaluate({"width": table["width"].to_numpy()})) == [
        False,
        True,
        False,
        False,
        True,
    ]


def test_columns_refuse_string_repetition_and_object_arithmetic(table):
    with pytest.raises(ExprError, match="needs numbers, got a column of"):
        parse("dataset * 10**9 == 'x'").evaluate({"dataset": table["dataset"]})
    with pytest.raises(ExprError, match="too large"):
        parse("width ** 10**6 > 1").evaluate({"width": table["width"]})


# -- the callers ---------------------------------------------------------------------------

GRID_PAYLOAD = (
    "[c for c in ().__class__.__mro__[1].__subclasses__() if c.__name__=='catch_warnings'][0]()"
    "._module.__builtins__['__import__']('os').system('touch PWNED') and False"
)


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    from scaling_sweep.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def test_plan_refuses_the_grid_drop_escape_in_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out_dir = tmp_path / "results"
    code, out = run_cli(capsys, "plan", f"out_dir={out_dir}", f'+grid.drop=["{GRID_PAYLOAD}"]')
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: grid.drop"), out
    assert "calls other than abs, min, max, log not allowed" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no PWNED, no sweep directory


def test_grid_drop_filters_points_with_dotted_names_and_functions():
    from scaling_sweep.errors import ConfigError
    from scaling_sweep.grid import expand
    from tests.conftest import composed

    plan = expand(composed("+grid.drop=['max(model.width, data.fraction) >= 1 or seed in [1, 2]']"))
    assert {(s.model["width"], s.data["fraction"], s.seed) for s in plan.specs} == {
        (w, f, 0) for w in (0.25, 0.5) for f in (0.25, 0.5)
    }
    with pytest.raises(ConfigError) as info:
        expand(composed("+grid.drop=['model.widht > 1']"))
    assert str(info.value) == (
        "grid.drop 'model.widht > 1': unknown name 'model.widht' (did you mean 'model.width'?)"
    )


def fit_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "width": [0.5, 0.5, 1.0, 1.0],
            "density": [1.0, 0.8, 1.0, 0.8],
            "level": [0, 1, 0, 1],
            "test_error": [0.2, 0.25, 0.15, 0.18],
        }
    )


@pytest.mark.parametrize("payload", ["@os.system('touch PWNED')", "width.__class__", "__import__('os')"])
def test_fit_filters_refuse_code_and_create_nothing(tmp_path, monkeypatch, payload):
    from scaling_sweep.fit import FitError, fit_points, fit_table

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FitError) as info:
        fit_table(fit_frame(), tmp_path / "fit", train_on=payload, plots=False)
    assert str(info.value).startswith(f"train_on={payload!r} is not a valid filter")
    with pytest.raises(FitError) as info:
        fit_points(fit_frame(), where=payload)
    assert str(info.value).startswith(f"where={payload!r} is not a valid filter")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_fit_filter_that_is_not_a_condition_is_refused():
    from scaling_sweep.fit import FitError, fit_points

    with pytest.raises(FitError, match="must be a boolean condition"):
        fit_points(fit_frame(), where="width * 2")
    assert len(fit_points(fit_frame(), where="width == 1").frame) == 2


@pytest.mark.parametrize("name", ["../../etc", "''", "a/b", "..", ".hidden", "-rf", "a b"])
def test_bad_sweep_names_stop_with_one_line(capsys, tmp_path, name):
    code, out = run_cli(capsys, "plan", f"out_dir={tmp_path}/results", f"name={name}")
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: name="), out
    assert "a sweep name is one directory under out_dir" in lines[0]
    assert not any(tmp_path.iterdir())
