"""The filter language of `grid.drop`, `fit.where` and `fit.train_on`: a whitelisted expression evaluator that reaches no Python object.

Filters come from shared sweep.yaml files and command lines, so they are data, never code: the
text is parsed with `ast` and only the constructs below are accepted; a small interpreter then
computes the value with Python operators on the values the caller hands it. There is no
`eval`, no attribute lookup and no call except the few pure functions listed here, so a
filter cannot reach a module, a class or a builtin.

Grammar (Python syntax, a subset):

- literals: numbers, 'strings', True, False, None
- names resolved only from the caller's mapping: plain (`width`) or, where the caller allows,
  dotted (`model.width`); no part may start with `_`
- arithmetic: + - * / // % ** and unary - + (numbers only; + also joins two strings)
- comparisons: == != < <= > >=, chained (`0.25 < width <= 1`), `x in [..]` / `x not in (..)`
  over a literal list or tuple, `x is None` / `x is not None` (in a table: a missing value)
- logic: and, or, not
- functions: abs(x), min(a, b, ...), max(a, b, ...), log(x)

Names may map to scalars (the grid: one point at a time) or to NumPy arrays / pandas Series of
one length (a table: every row at once); with arrays, and/or/not work elementwise and `in` is
`isin`. Limits keep a filter from eating the machine: the text, the tree's depth and size, the
exponent of `**` and the size of integers are all bounded, and strings are never repeated.
"""

from __future__ import annotations

import ast
import difflib
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import reduce
from typing import Any

MAX_LENGTH = 1000  # characters of filter text
MAX_DEPTH = 50  # nesting of the syntax tree (a + b + c is 3 deep)
MAX_NODES = 400  # syntax-tree nodes; `x in [...]` with 100 items is about 105
MAX_EXPONENT = 1000  # |y| in x ** y
MAX_INT_BITS = 4096  # an integer result of more bits is refused (10**1000 has 3322)

ALLOWED = (
    "literals, names, + - * / // % **, comparisons (chained too), in/not in a literal list, "
    "is None, and/or/not, abs/min/max/log"
)


class ExprError(ValueError):
    """A filter that is not in the language or cannot be computed; str(err) is one line."""


@dataclass(frozen=True)
class Function:
    fn: Callable[..., Any]
    min_args: int
    max_args: int | None  # None: any number


def _is_vector(x: Any) -> bool:
    # NumPy arrays and pandas Series have ndim >= 1; NumPy scalars have ndim 0. Duck typing keeps
    # this module free of a pandas import for the grid, which only ever sees scalars.
    return getattr(x, "ndim", 0) >= 1


def _abs(x: Any) -> Any:
    _need_number("abs()", x)
    return abs(x)


def _min(*xs: Any) -> Any:
    return _extreme("min()", min, "minimum", xs)


def _max(*xs: Any) -> Any:
    return _extreme("max()", max, "maximum", xs)


def _extreme(what: str, scalar: Callable[..., Any], ufunc: str, xs: tuple[Any, ...]) -> Any:
    if not any(_is_vector(x) for x in xs):
        return scalar(xs)
    import numpy as np

    for x in xs:
        _need_number(what, x)
    return reduce(getattr(np, ufunc), xs)


def _log(x: Any) -> Any:
    _need_number("log()", x)
    if _is_vector(x):
        import numpy as np

        return np.log(x)
    return math.log(x)


FUNCTIONS: Mapping[str, Function] = {
    "abs": Function(_abs, 1, 1),
    "min": Function(_min, 2, None),
    "max": Function(_max, 2, None),
    "log": Function(_log, 1, 1),
}


# -- what the language is made of -----------------------------------------------------------

_BINOPS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_COMPARE: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    ast.Eq: ("==", operator.eq),
    ast.NotEq: ("!=", operator.ne),
    ast.Lt: ("<", operator.lt),
    ast.LtE: ("<=", operator.le),
    ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge),
}
_CONSTANTS = (bool, int, float, str, type(None))
# How refusals name what they refuse, for the constructs people reach for most.
_DESCRIBE: dict[type, str] = {
    ast.Attribute: "attribute access (x.y)",
    ast.Subscript: "subscripts (x[i])",
    ast.Call: "calls",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "generator expressions",
    ast.NamedExpr: "assignment (:=)",
    ast.Starred: "starred arguments (*x)",
    ast.JoinedStr: "f-strings",
    ast.FormattedValue: "f-strings",
    ast.IfExp: "conditional expressions (a if c else b)",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.List: "lists outside 'in [...]'",
    ast.Tuple: "tuples outside 'in (...)'",
    ast.Slice: "slices",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.BitAnd: "'&' (use and)",
    ast.BitOr: "'|' (use or)",
    ast.BitXor: "'^'",
    ast.Invert: "'~' (use not)",
    ast.LShift: "'<<'",
    ast.RShift: "'>>'",
    ast.MatMult: "'@'",
}


@dataclass(frozen=True)
class Expr:
    """A parsed filter: only whitelisted nodes, ready to evaluate against a mapping of names."""

    source: str
    tree: ast.expr
    names: frozenset[str]  # every name it reads, dotted ones joined with '.'
    functions: Mapping[str, Function]

    def check_names(self, known: Iterable[str]) -> None:
        """Raise ExprError for the first name not in `known` (checked before any evaluation)."""
        known = list(known)
        for name in sorted(self.names):
            if name not in known:
                raise _unknown(name, known)

    def evaluate(self, names: Mapping[str, Any]) -> Any:
        """The value of the filter with `names` bound; ExprError when it cannot be computed."""
        try:
            return _Interpreter(self.source, names, self.functions).eval(self.tree)
        except ExprError:
            raise
        except (ArithmeticError, TypeError, ValueError, LookupError) as e:
            # Operators on the caller's values (pandas, NumPy) fail in their own ways; the user
            # still gets one line, not a traceback.
            first = str(e).splitlines()[0] if str(e) else ""
            raise ExprError(f"cannot compute it ({type(e).__name__}: {first})") from e


def parse(source: str, *, dotted: bool = False, functions: Mapping[str, Function] = FUNCTIONS) -> Expr:
    """Parse and check a filter; ExprError names the first construct that is not allowed."""
    if not isinstance(source, str):
        raise ExprError(f"a filter is a string, not {type(source).__name__}")
    if len(source) > MAX_LENGTH:
        raise ExprError(f"the filter is {len(source)} characters long; at most {MAX_LENGTH} are allowed")
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as e:
        raise ExprError(f"not a valid expression ({e.msg})") from e
    except (ValueError, RecursionError, MemoryError) as e:  # null bytes; nesting the parser refuses
        raise ExprError(f"not a valid expression ({type(e).__name__})") from e
    checker = _Checker(source.strip(), dotted, functions)
    checker.check(tree, 1)
    return Expr(source, tree, frozenset(checker.names), functions)


def evaluate(source: str, names: Mapping[str, Any], *, dotted: bool = False) -> Any:
    """parse(source).evaluate(names) in one call."""
    expr = parse(source, dotted=dotted)
    return expr.evaluate(names)


def _unknown(name: str, known: Iterable[str]) -> ExprError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ExprError(f"unknown name {name!r}{hint}")


def _snippet(source: str, node: ast.AST) -> str:
    text = ast.get_source_segment(source, node) or ast.unparse(node)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _dotted_name(node: ast.AST) -> str | None:
    """'model.width' for the tree of `model.width`; None when it is not a chain of plain names."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


# -- checking: the whitelist ------------------------------------------------------------------


class _Checker:
    def __init__(self, source: str, dotted: bool, functions: Mapping[str, Function]) -> None:
        self.source = source
        self.dotted = dotted
        self.functions = functions
        self.names: set[str] = set()
        self.nodes = 0

    def refuse(self, node: ast.AST, what: str | None = None) -> ExprError:
        what = what or _DESCRIBE.get(type(node), type(node).__name__)
        return ExprError(f"{what} not allowed, at {_snippet(self.source, node)}; allowed: {ALLOWED}")

    def check(self, node: ast.expr, depth: int) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExprError(f"the filter has more than {MAX_NODES} parts; simplify it")
        if depth > MAX_DEPTH:
            raise ExprError(f"the filter nests deeper than {MAX_DEPTH} levels; simplify it")
        if isinstance(node, ast.Constant):
            self.constant(node)
        elif isinstance(node, ast.Name):
            self.name(node, node.id)
        elif isinstance(node, ast.Attribute):
            self.attribute(node)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.check(value, depth + 1)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
                raise self.refuse(node, _DESCRIBE.get(type(node.op), type(node.op).__name__))
            self.check(node.operand, depth + 1)
        elif isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.refuse(node, _DESCRIBE.get(type(node.op), type(node.op).__name__))
            self.check(node.left, depth + 1)
            self.check(node.right, depth + 1)
        elif isinstance(node, ast.Compare):
            self.compare(node, depth)
        elif isinstance(node, ast.Call):
            self.call(node, depth)
        else:
            raise self.refuse(node)

    def constant(self, node: ast.Constant) -> None:
        # Bytes, complex numbers and Ellipsis have no place in a filter.
        if type(node.value) not in _CONSTANTS:
            raise self.refuse(node, f"{type(node.value).__name__} literals")

    def name(self, node: ast.AST, name: str) -> None:
        # Underscored names are how Python spells its internals (__class__, __import__): refuse
        # them outright rather than only failing to find them.
        if any(part.startswith("_") for part in name.split(".")):
            raise self.refuse(node, "names starting with '_'")
        self.names.add(name)

    def attribute(self, node: ast.Attribute) -> None:
        name = _dotted_name(node) if self.dotted else None
        if name is None:
            what = "attribute access (x.y)" if self.dotted else "attribute access (x.y; names are plain)"
            raise self.refuse(node, what)
        self.name(node, name)

    def compare(self, node: ast.Compare, depth: int) -> None:
        self.check(node.left, depth + 1)
        for i, (op, right) in enumerate(zip(node.ops, node.comparators)):
            # A literal list or None cannot be the left side of a further comparison in a chain.
            if isinstance(op, (ast.In, ast.NotIn, ast.Is, ast.IsNot)) and i < len(node.ops) - 1:
                raise self.refuse(node, "chaining another comparison after 'in' or 'is'")
            if isinstance(op, (ast.In, ast.NotIn)):
                self.literal_list(right, depth + 1)
            elif isinstance(op, (ast.Is, ast.IsNot)):
                if not (isinstance(right, ast.Constant) and right.value is None):
                    raise self.refuse(right, "'is' other than 'is None' / 'is not None'")
                self.nodes += 1
            else:
                self.check(right, depth + 1)

    def literal_list(self, node: ast.expr, depth: int) -> None:
        # `in` tests membership in a list written out in the filter, never in a value the filter
        # computed: a name on the right could be a string (substring tests) or anything else.
        if not isinstance(node, (ast.List, ast.Tuple)):
            raise self.refuse(node, "'in' over anything but a literal list or tuple such as [1, 2]")
        self.nodes += 1
        for item in node.elts:
            inner = item.operand if isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub) else item
            if not isinstance(inner, ast.Constant):
                raise self.refuse(item, "items of an 'in' list other than literals")
            self.check(item, depth + 1)

    def call(self, node: ast.Call, depth: int) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in self.functions:
            raise self.refuse(node, f"calls other than {', '.join(self.functions) or 'none'}")
        if node.keywords:
            raise self.refuse(node, "keyword arguments")
        starred = next((arg for arg in node.args if isinstance(arg, ast.Starred)), None)
        if starred is not None:
            raise self.refuse(starred)
        fn = self.functions[node.func.id]
        n = len(node.args)
        if n < fn.min_args or (fn.max_args is not None and n > fn.max_args):
            wanted = fn.min_args if fn.max_args == fn.min_args else f"at least {fn.min_args}"
            raise ExprError(
                f"{node.func.id}() takes {wanted} argument(s), got {n}, at {_snippet(self.source, node)}"
            )
        self.nodes += 1
        for arg in node.args:
            self.check(arg, depth + 1)


# -- evaluating: only operators on the caller's values -------------------------------------


def _need_number(what: str, x: Any) -> None:
    """Refuse operands arithmetic could misuse: strings (repetition, % formatting) and object
    arrays (whose elements would meet Python's unbounded operators one by one)."""
    if _is_vector(x):
        if getattr(getattr(x, "dtype", None), "kind", "O") not in "biuf":
            raise ExprError(f"{what} needs numbers, got a column of {x.dtype}")
    elif isinstance(x, str):
        raise ExprError(
            f"{what} needs numbers, got the string {_short(x)} (strings only compare and join with +)"
        )
    elif not isinstance(x, numbers.Number) or isinstance(x, complex):
        raise ExprError(f"{what} needs numbers, got {type(x).__name__} {_short(x)}")


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_pow(base: Any, exponent: Any) -> None:
    if _is_vector(exponent):
        return  # numeric dtype: NumPy's fixed-size numbers bound the work
    if abs(exponent) > MAX_EXPONENT:
        raise ExprError(f"exponent {_short(exponent)} in ** is too large (at most {MAX_EXPONENT} in size)")
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0:
        if abs(base).bit_length() * exponent > MAX_INT_BITS:
            raise ExprError(f"{_short(base)} ** {exponent} is too large (integers up to {MAX_INT_BITS} bits)")


def _as_bool_vector(x: Any) -> Any:
    # NumPy's bool and pandas' nullable "boolean" (whose missing values & and | handle) pass as they are.
    return x if str(getattr(x, "dtype", "")) in ("bool", "boolean") else x.astype(bool)


class _Interpreter:
    def __init__(self, source: str, names: Mapping[str, Any], functions: Mapping[str, Function]) -> None:
        self.source = source
        self.names = names
        self.functions = functions

    def eval(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self.lookup(node)
        if isinstance(node, ast.BoolOp):
            return self.bool_op(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        # parse() let nothing else through; a tree built by hand does not get further either.
        raise ExprError(f"{type(node).__name__} not allowed; allowed: {ALLOWED}")

    def lookup(self, node: ast.expr) -> Any:
        name = node.id if isinstance(node, ast.Name) else _dotted_name(node)
        if name is None or name not in self.names:
            raise _unknown(str(name), self.names)
        return self.names[name]

    def truth(self, x: Any) -> bool:
        try:
            return bool(x)
        except (TypeError, ValueError) as e:
            raise ExprError(f"cannot use {_short(x)} as true/false ({e})") from e

    def bool_op(self, node: ast.BoolOp) -> Any:
        # Scalars short-circuit as in Python (so `x != 0 and 1 / x > 2` is safe); arrays combine
        # elementwise with & and |. The result is a bool or a boolean array.
        is_and = isinstance(node.op, ast.And)
        acc = None
        for value_node in node.values:
            value = self.eval(value_node)
            if _is_vector(value):
                value = _as_bool_vector(value)
                acc = value if acc is None else (acc & value if is_and else acc | value)
            elif self.truth(value) != is_and:
                return not is_and  # False for and, True for or: decided whatever the rest is
        return is_and if acc is None else acc

    def unary(self, node: ast.UnaryOp) -> Any:
        value = self.eval(node.operand)
        if isinstance(node.op, ast.Not):
            return ~_as_bool_vector(value) if _is_vector(value) else not self.truth(value)
        sign = "-" if isinstance(node.op, ast.USub) else "+"
        _need_number(f"unary {sign}", value)
        return -value if sign == "-" else +value

    def binary(self, node: ast.BinOp) -> Any:
        symbol, fn = _BINOPS[type(node.op)]
        left, right = self.eval(node.left), self.eval(node.right)
        joins_strings = symbol == "+" and isinstance(left, str) and isinstance(right, str)
        if not joins_strings:
            _need_number(f"'{symbol}'", left)
            _need_number(f"'{symbol}'", right)
        if symbol == "**":
            _check_pow(left, right)
        result = self.apply(symbol, fn, left, right)
        if isinstance(result, int) and result.bit_length() > MAX_INT_BITS:
            raise ExprError(f"'{symbol}' gives an integer over {MAX_INT_BITS} bits")
        return result

    def apply(self, symbol: str, fn: Callable[[Any, Any], Any], left: Any, right: Any) -> Any:
        try:
            return fn(left, right)
        except (ArithmeticError, TypeError, ValueError) as e:
            raise ExprError(f"{_short(left)} {symbol} {_short(right)}: {e}") from e

    def compare(self, node: ast.Compare) -> Any:
        left = self.eval(node.left)
        acc = None
        for op, right_node in zip(node.ops, node.comparators):
            right = self.eval(right_node) if not isinstance(right_node, (ast.List, ast.Tuple)) else None
            if isinstance(op, (ast.In, ast.NotIn)):
                items = [self.eval(item) for item in right_node.elts]  # type: ignore[attr-defined]
                result = self.member(left, items, isinstance(op, ast.NotIn))
            elif isinstance(op, (ast.Is, ast.IsNot)):
                result = self.is_none(left, isinstance(op, ast.IsNot))
            else:
                symbol, fn = _COMPARE[type(op)]
                result = self.apply(symbol, fn, left, right)
            if _is_vector(result):
                acc = result if acc is None else acc & result
            elif not self.truth(result):
                return False  # a chain is an and: one false link decides it
            left = right
        return True if acc is None else acc

    def member(self, value: Any, items: list[Any], negate: bool) -> Any:
        if _is_vector(value):
            if hasattr(value, "isin"):
                found = value.isin(items)
            else:
                import numpy as np

                found = np.isin(value, items)
            return ~found if negate else found
        try:
            return (value in items) != negate
        except (TypeError, ValueError) as e:
            raise ExprError(f"{_short(value)} in {_short(items)}: {e}") from e

    def is_none(self, value: Any, negate: bool) -> Any:
        if _is_vector(value):
            import pandas as pd  # only tables hold arrays, and tables come from pandas

            missing = pd.isna(value)
            return ~missing if negate else missing
        return (value is None) != negate

    def call(self, node: ast.Call) -> Any:
        name = node.func.id  # type: ignore[attr-defined]
        args = [self.eval(arg) for arg in node.args]
        try:
            return self.functions[name].fn(*args)
        except ExprError:
            raise
        except (ArithmeticError, TypeError, ValueError) as e:
            raise ExprError(f"{name}({', '.join(_short(a) for a in args)}): {e}") from e
