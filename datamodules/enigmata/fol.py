"""Exact entailment for the monadic first-order fragment the FOLIO task generates.

Premises are universal rules over one variable and ground facts about named constants:

    ["all", P, Q]          every P is a Q                  forall x. P(x) -> Q(x)
    ["no", P, Q]           no P is a Q                     forall x. P(x) -> not Q(x)
    ["all_or", P, Q, R]    every P is a Q or an R          forall x. P(x) -> Q(x) or R(x)
    ["all_both", P, Q, R]  every P that is a Q is an R     forall x. P(x) and Q(x) -> R(x)
    ["is", c, P, True]     c is a P  (False: c is not a P)
    ["either", c, P, Q]    c is a P or a Q (or both)

and a conclusion is ``["is", c, P, polarity]`` or ``["either", c, P, Q]``.

Why checking valuations of each named constant separately is exact: every premise is a universal
sentence without existentials or function symbols, so by Herbrand's theorem the premises plus the
negated (ground) conclusion have a model iff they have one whose domain is the named constants.
All predicates are unary, so the instances of the rules at one constant mention only that
constant's atoms: the premises decompose into independent constraints, one per constant, over its
2^k predicate valuations. The premises entail the conclusion about c iff every valuation of c
allowed by its constraints satisfies it (and the premises are consistent, i.e. every constant has
at least one allowed valuation).
"""

from __future__ import annotations

TRUE, FALSE, UNKNOWN = "True", "False", "Unknown"


def rule_clause(rule: list) -> tuple[int, int]:
    """A rule as a clause over predicate bitmasks ``(if_all, then_any)``: an element whose
    predicates include all of ``if_all`` must have one of ``then_any`` (empty: must not)."""
    kind = rule[0]
    if kind == "all":
        return 1 << rule[1], 1 << rule[2]
    if kind == "no":
        return (1 << rule[1]) | (1 << rule[2]), 0
    if kind == "all_or":
        return 1 << rule[1], (1 << rule[2]) | (1 << rule[3])
    if kind == "all_both":
        return (1 << rule[1]) | (1 << rule[2]), 1 << rule[3]
    raise ValueError(f"unknown rule {kind!r}")


def holds_ground(statement: list, constant: int, val: int) -> bool | None:
    """Truth of a ground statement at ``constant`` with valuation ``val``; None if the statement
    is about another constant (so it does not constrain this one)."""
    kind, c = statement[0], statement[1]
    if c != constant:
        return None
    if kind == "is":
        return bool(val >> statement[2] & 1) == statement[3]
    if kind == "either":
        return bool(val >> statement[2] & 1) or bool(val >> statement[3] & 1)
    raise ValueError(f"unknown ground statement {kind!r}")


def allowed_valuations(rules: list, facts: list, constant: int, num_predicates: int) -> list[int]:
    """All predicate bitmasks of ``constant`` consistent with the rules and its facts."""
    clauses = [rule_clause(r) for r in rules]
    own = [f for f in facts if f[1] == constant]
    out = []
    for val in range(1 << num_predicates):
        if all((val & if_all) != if_all or val & then_any for if_all, then_any in clauses) and all(holds_ground(f, constant, val) for f in own):
            out.append(val)
    return out


def world_valuations(rules: list, facts: list, constants: list[int], num_predicates: int) -> dict[int, list[int]] | None:
    """Allowed valuations of each constant, or None when the premises are inconsistent."""
    allowed = {c: allowed_valuations(rules, facts, c, num_predicates) for c in constants}
    return None if any(not vals for vals in allowed.values()) else allowed


def label_in_world(allowed: dict[int, list[int]], conclusion: list) -> str:
    """True / False / Unknown for a ground ``conclusion`` given consistent ``allowed`` valuations."""
    truth = {holds_ground(conclusion, conclusion[1], v) for v in allowed[conclusion[1]]}
    if truth == {True}:
        return TRUE
    if truth == {False}:
        return FALSE
    return UNKNOWN


def entailment_label(rules: list, facts: list, conclusion: list, num_predicates: int) -> str | None:
    """True / False / Unknown for ``conclusion``, or None when the premises are inconsistent."""
    constants = sorted({f[1] for f in facts} | {conclusion[1]})
    allowed = world_valuations(rules, facts, constants, num_predicates)
    return None if allowed is None else label_in_world(allowed, conclusion)
