"""Just enough of PromQL to check that an expression only uses metrics, labels and label
values that exist: a tokenizer and a walk over the tokens that finds the series
selectors (metric name and label matchers), the grouping labels (by, without, on,
ignoring, group_left, group_right) and the function names. promtool checks the syntax;
this checks the names against /metrics captured from the real programs.

Used by check_monitoring.py, which also feeds it known-bad expressions to prove that
each check can fail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<num>0[xX][0-9a-fA-F]+
      |(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:(?:ms|[smhdwy])(?:[0-9]+(?:ms|[smhdwy]))*)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^=<>(){}\[\],@:])
""", re.X)

GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2"}
# Aggregation operators may be followed by `by (...)`/`without (...)` before their `(`.
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile"}
NUMBER_WORDS = {"inf", "nan"}
MATCH_OPS = {"=", "!=", "=~", "!~"}


class PromQLError(ValueError):
    pass


@dataclass
class Selector:
    metric: str | None
    matchers: list[tuple[str, str, str]]  # (label, op, value)


@dataclass
class Analysis:
    selectors: list[Selector] = field(default_factory=list)
    by: set[str] = field(default_factory=set)
    grouping: set[str] = field(default_factory=set)  # every label named in a grouping clause
    functions: set[str] = field(default_factory=set)


def _unquote(tok: str) -> str:
    if tok[0] == "`":
        return tok[1:-1]
    escapes = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), tok[1:-1])


def tokenize(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot read {expr[pos:pos + 20]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def analyse(expr: str) -> Analysis:
    toks = tokenize(expr)
    a = Analysis()
    i = 0

    def text(j: int) -> str | None:
        return toks[j][1] if j < len(toks) else None

    def read_matchers(j: int) -> tuple[list[tuple[str, str, str]], int]:
        """j at '{'; returns the matchers and the index after '}'."""
        matchers = []
        j += 1
        while text(j) != "}":
            if j + 2 >= len(toks) or toks[j][0] != "ident" or text(j + 1) not in MATCH_OPS or toks[j + 2][0] != "str":
                raise PromQLError(f"bad label matcher near {' '.join(t for _, t in toks[j:j + 3])!r}")
            matchers.append((toks[j][1], text(j + 1), _unquote(toks[j + 2][1])))
            j += 3
            if text(j) == ",":
                j += 1
            elif text(j) != "}":
                raise PromQLError(f"expected , or }} after a matcher, got {text(j)!r}")
        return matchers, j + 1

    while i < len(toks):
        kind, tok = toks[i]
        if kind == "ident":
            if tok in GROUPING:
                i += 1
                if text(i) == "(":
                    i += 1
                    while text(i) != ")":
                        if text(i) is None:
                            raise PromQLError(f"unclosed {tok} (...)")
                        if toks[i][0] == "ident":
                            a.grouping.add(toks[i][1])
                            if tok == "by":
                                a.by.add(toks[i][1])
                        elif text(i) != ",":
                            raise PromQLError(f"unexpected {text(i)!r} in {tok} (...)")
                        i += 1
                    i += 1
                continue
            if tok in KEYWORDS or tok.lower() in NUMBER_WORDS:
                i += 1
                continue
            if text(i + 1) == "(" or (tok in AGGREGATIONS and text(i + 1) in ("by", "without")):
                a.functions.add(tok)
                i += 1
                continue
            if text(i + 1) == "{":
                matchers, i = read_matchers(i + 1)
            else:
                matchers, i = [], i + 1
            a.selectors.append(Selector(tok, matchers))
            continue
        if tok == "{":
            matchers, i = read_matchers(i)
            names = [v for label, op, v in matchers if label == "__name__" and op == "="]
            a.selectors.append(Selector(names[0] if names else None, matchers))
            continue
        if tok == "[":
            depth = 0
            while True:
                if text(i) is None:
                    raise PromQLError("unclosed [")
                depth += {"[": 1, "]": -1}.get(text(i), 0)
                i += 1
                if depth == 0:
                    break
            continue
        i += 1
    return a


# ---------------------------------------------------------------------------------------
# The catalog of what exists: metric -> label -> values seen
# ---------------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+\S+")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> dict[str, dict[str, set[str]]]:
    """Metric name -> label name -> values, from Prometheus or OpenMetrics text."""
    catalog: dict[str, dict[str, set[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise PromQLError(f"not a sample line: {line!r}")
        labels = catalog.setdefault(m.group(1), {})
        for name, value in _LABEL.findall(m.group(2) or ""):
            labels.setdefault(name, set()).add(_unquote('"' + value + '"'))
    return catalog


def check(expr: str, catalog: dict[str, dict[str, set[str]]], target_labels: set[str],
          legend: str | None = None) -> list[str]:
    """Problems with the names in expr (empty: none). target_labels are the labels
    Prometheus attaches to every scraped series (job, instance, ...): accepted on any
    metric, their values not checked."""
    try:
        a = analyse(expr)
    except PromQLError as e:
        return [f"cannot analyse: {e}"]
    problems = []
    known_labels = set(target_labels)
    for s in a.selectors:
        if s.metric is None:
            problems.append("a selector without a metric name")
            continue
        if s.metric not in catalog:
            problems.append(f"unknown metric {s.metric}")
            continue
        labels = catalog[s.metric]
        known_labels |= set(labels)
        for label, op, value in s.matchers:
            if label == "__name__":
                continue
            if label not in labels and label not in target_labels:
                problems.append(f"{s.metric} has no label {label} (it has {', '.join(sorted(labels)) or 'none'})")
                continue
            if label in target_labels and label not in labels:
                continue
            seen = labels[label]
            if op == "=" and value not in seen:
                problems.append(f'{s.metric}{{{label}="{value}"}}: never seen (seen: {", ".join(sorted(seen))})')
            elif op == "=~":
                try:
                    rx = re.compile(value)
                except re.error as e:
                    problems.append(f"{s.metric}{{{label}=~{value!r}}}: bad regex: {e}")
                    continue
                if not any(rx.fullmatch(v) for v in seen):
                    problems.append(f'{s.metric}{{{label}=~"{value}"}}: matches no value seen ({", ".join(sorted(seen))})')
    for label in sorted(a.grouping - known_labels):
        problems.append(f"grouping by {label}, which none of the expression's metrics has")
    if legend is not None:
        wanted = set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend))
        have = a.by if a.by else known_labels
        for label in sorted(wanted - have):
            problems.append(f"legend uses {{{{{label}}}}}, which the result does not have (it has {', '.join(sorted(have))})")
    return problems
