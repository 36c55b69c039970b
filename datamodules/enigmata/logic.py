"""Enigmata Logic tasks: ``knights_and_knaves``, ``FOLIO`` and ``zebra_logic``.

All three are generated (the original drew knights-and-knaves and FOLIO from fixed pools) and
their answers are unique by construction: knights-and-knaves and zebra puzzles are resampled or
extended with clues until a brute-force / backtracking solver finds exactly one solution, and
FOLIO labels come from an exact entailment check (:mod:`datamodules.enigmata.fol`).
"""

from __future__ import annotations

import random
from itertools import product

from datamodules.enigmata.base import Task, register
from datamodules.enigmata.fol import FALSE, TRUE, UNKNOWN, label_in_world, world_valuations

# =============================================================================================
# Knights and knaves

ISLANDERS = ("Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace")
KNIGHT, KNAVE = "knight", "knave"
MAX_KK_ANSWER_CHARS = 400


def kk_truth(statement: list, roles: tuple[bool, ...]) -> bool:
    """Truth of a statement tree under ``roles`` (True = knight). Trees are JSON lists:
    ["is", i, knight?], ["not", s], ["and", s, t], ["or", s, t], ["iff", s, t], ["exactly", k]."""
    kind = statement[0]
    if kind == "is":
        return roles[statement[1]] == statement[2]
    if kind == "not":
        return not kk_truth(statement[1], roles)
    if kind == "and":
        return kk_truth(statement[1], roles) and kk_truth(statement[2], roles)
    if kind == "or":
        return kk_truth(statement[1], roles) or kk_truth(statement[2], roles)
    if kind == "iff":
        return kk_truth(statement[1], roles) == kk_truth(statement[2], roles)
    if kind == "exactly":
        return sum(roles) == statement[1]
    raise ValueError(f"unknown statement {kind!r}")


def kk_consistent(statements: list, roles: tuple[bool, ...]) -> bool:
    """Every knight's statements are true and every knave's are false."""
    return all(kk_truth(s, roles) == roles[speaker] for speaker, s in statements)


def kk_solutions(statements: list, n: int, limit: int = 2) -> list[tuple[bool, ...]]:
    """Consistent role assignments (brute force over all 2^n), at most ``limit`` of them."""
    found = []
    for roles in product((True, False), repeat=n):
        if kk_consistent(statements, roles):
            found.append(roles)
            if len(found) >= limit:
                break
    return found


def kk_render(statement: list, names: list[str], speaker: int) -> str:
    kind = statement[0]
    if kind == "is":
        who = "I" if statement[1] == speaker else names[statement[1]]
        verb = "am" if who == "I" else "is"
        return f"{who} {verb} a {KNIGHT if statement[2] else KNAVE}"
    if kind == "exactly":
        k = statement[1]
        return f"exactly {k} of us {'is a knight' if k == 1 else 'are knights'}"
    if kind == "not":
        inner = statement[1]
        if inner[0] == "and":
            return f"it is not the case that both {kk_render(inner[1], names, speaker)} and {kk_render(inner[2], names, speaker)}"
        if inner[0] == "or":
            return f"neither {kk_render(inner[1], names, speaker)} nor {kk_render(inner[2], names, speaker)}"
        return f"it is not the case that {kk_render(inner, names, speaker)}"
    a, b = kk_render(statement[1], names, speaker), kk_render(statement[2], names, speaker)
    if kind == "and":
        return f"{a} and {b}"
    if kind == "or":
        return f"{a} or {b}"
    return f"{a} if and only if {b}"


def _random_statement(rng: random.Random, n: int, speaker: int, compound_rate: float) -> list:
    """A simple claim about someone else, a head count, or (with probability ``compound_rate``)
    a combination of two claims that may mention the speaker: statements only about others
    never break the symmetry of flipping everyone's role, these do."""
    if rng.random() < 0.15:
        return ["exactly", rng.randint(0, n)]
    if rng.random() >= compound_rate:
        return ["is", rng.choice([i for i in range(n) if i != speaker]), rng.random() < 0.5]
    i, j = rng.sample(range(n), 2)
    a, b = ["is", i, rng.random() < 0.5], ["is", j, rng.random() < 0.5]
    kind = rng.choice(("and", "or", "iff", "not_and", "not_or"))
    if kind.startswith("not_"):
        return ["not", [kind[4:], a, b]]
    return [kind, a, b]


def parse_roles(answer: str, names: list[str]) -> tuple[bool, ...] | None:
    """``Alice: knight, Bob: knave`` (commas, semicolons or new lines; any order; case-insensitive)
    -> roles in ``names`` order, or None unless every islander is named exactly once."""
    if not isinstance(answer, str) or len(answer) > MAX_KK_ANSWER_CHARS:
        return None
    index = {name.lower(): i for i, name in enumerate(names)}
    roles: dict[int, bool] = {}
    for part in answer.replace(";", ",").replace("\n", ",").split(","):
        if not part.strip():
            continue
        name, sep, role = part.partition(":")
        i = index.get(name.strip().lower())
        role = role.strip().rstrip(".").lower()
        if not sep or i is None or i in roles or role not in (KNIGHT, KNAVE):
            return None
        roles[i] = role == KNIGHT
    if len(roles) != len(names):
        return None
    return tuple(roles[i] for i in range(len(names)))


def format_roles(roles: tuple[bool, ...], names: list[str]) -> str:
    return ", ".join(f"{name}: {KNIGHT if r else KNAVE}" for name, r in zip(names, roles))


@register
class KnightsAndKnaves(Task):
    """Knights always tell the truth, knaves always lie; who is which?

    Generated, not pooled: a hidden role assignment is drawn, each islander gets statements whose
    truth matches their role, and statements are added until brute force over all 2^n
    assignments leaves exactly one consistent assignment. The verifier checks consistency with
    every statement; by that uniqueness the consistent assignment is the gold one.
    """

    name = "knights_and_knaves"
    category = "Logic"
    presets = {
        "easy": {"min_people": 2, "max_people": 3, "compound_rate": 0.3},
        "medium": {"min_people": 3, "max_people": 5, "compound_rate": 0.6},
        "hard": {"min_people": 5, "max_people": 7, "compound_rate": 0.85},
    }
    test_knobs = [{"min_people": 2, "max_people": 2, "compound_rate": 0.0}, {"min_people": 7, "max_people": 7, "compound_rate": 1.0}]

    def build(self, rng, min_people, max_people, compound_rate):
        if not 2 <= min_people <= max_people <= len(ISLANDERS):
            raise ValueError(f"knights_and_knaves: need 2 <= min_people <= max_people <= {len(ISLANDERS)}")
        n = rng.randint(min_people, max_people)
        names = list(ISLANDERS[:n])
        for _ in range(1000):
            roles = tuple(rng.random() < 0.5 for _ in range(n))
            statements: list = []
            speakers = list(range(n)) + [rng.randrange(n) for _ in range(2 * n)]  # extras if needed
            for speaker in speakers:
                statement = _random_statement(rng, n, speaker, compound_rate)
                while kk_truth(statement, roles) != roles[speaker]:
                    statement = _random_statement(rng, n, speaker, compound_rate)
                statements.append([speaker, statement])
                if len(statements) >= n and len(kk_solutions(statements, n)) == 1:
                    break
            if len(kk_solutions(statements, n)) == 1:
                break
        else:
            raise ValueError("knights_and_knaves: no unique puzzle found; raise compound_rate")
        statements.sort(key=lambda s: s[0])  # group by speaker; order does not change the logic
        lines = [f'{names[sp]} says: "{kk_render(st, names, sp)[0].upper() + kk_render(st, names, sp)[1:]}."' for sp, st in statements]
        question = (
            "On an island every inhabitant is either a knight, who always tells the truth, or a knave, "
            f"who always lies. You meet {n} inhabitants: {', '.join(names)}.\n\n"
            + "\n".join(lines)
            + "\n\n('or' means at least one of the two is true.) Determine who is a knight and who is a "
            "knave. Answer with every inhabitant in the order given, as name: role separated by commas, "
            'for example "Xena: knight, Yuri: knave, Zoe: knave".'
        )
        metadata = {"names": names, "statements": statements}
        return question, format_roles(roles, names), metadata

    def verify(self, answer, metadata):
        roles = parse_roles(answer, metadata["names"])
        return roles is not None and kk_consistent(metadata["statements"], roles)

    def corruptions(self, puzzle, rng):
        names = puzzle.metadata["names"]
        gold = parse_roles(puzzle.answer[len("<answer>") : -len("</answer>")], names)
        i = rng.randrange(len(names))
        one_flipped = tuple(not r if k == i else r for k, r in enumerate(gold))
        all_flipped = tuple(not r for r in gold)
        body = format_roles(gold, names)
        return [
            format_roles(one_flipped, names),
            format_roles(all_flipped, names),
            body.rsplit(",", 1)[0] if len(names) > 1 else "",  # one islander missing
            body + f", {names[0]}: {KNIGHT if gold[0] else KNAVE}",  # someone named twice
            format_roles(gold, names).replace(KNIGHT if gold[0] else KNAVE, "liar", 1),  # not a role
        ]


# =============================================================================================
# FOLIO-style first-order logic

FOL_NOUNS = (
    ("wumpus", "wumpuses"), ("zorp", "zorps"), ("blicket", "blickets"), ("dax", "daxes"),
    ("florp", "florps"), ("gorp", "gorps"), ("snib", "snibs"), ("tove", "toves"),
    ("yimp", "yimps"), ("quax", "quaxes"), ("morp", "morps"), ("plinth", "plinths"),
    ("vorn", "vorns"), ("kelp", "kelps"),
)
FOL_NAMES = ("Rex", "Mia", "Tom", "Lia", "Sam")
MAX_LABEL_CHARS = 32


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def render_fol(statement: list, nouns: list[tuple[str, str]], names: list[str]) -> str:
    kind = statement[0]
    sg = lambda p: f"{_article(nouns[p][0])} {nouns[p][0]}"  # noqa: E731
    if kind == "all":
        return f"All {nouns[statement[1]][1]} are {nouns[statement[2]][1]}."
    if kind == "no":
        return f"No {nouns[statement[1]][0]} is {sg(statement[2])}."
    if kind == "all_or":
        return f"Every {nouns[statement[1]][0]} is {sg(statement[2])} or {sg(statement[3])} (or both)."
    if kind == "all_both":
        return f"Every {nouns[statement[1]][0]} that is {sg(statement[2])} is {sg(statement[3])}."
    who = names[statement[1]]
    if kind == "is":
        return f"{who} is {'' if statement[3] else 'not '}{sg(statement[2])}."
    if kind == "either":
        return f"{who} is {sg(statement[2])} or {sg(statement[3])} (or both)."
    raise ValueError(f"unknown statement {kind!r}")


def _random_rule(rng: random.Random, order: list[int]) -> list:
    """A rule whose antecedent comes earlier than its consequent in ``order`` (so rules chain)."""
    k = len(order)
    kind = rng.choices(("all", "no", "all_or", "all_both"), weights=(5, 2, 1.5, 1.5))[0]
    if kind in ("all", "no"):
        i, j = sorted(rng.sample(range(k), 2))
        return [kind, order[i], order[j]]
    i, j, m = sorted(rng.sample(range(k), 3))
    if kind == "all_or":
        return [kind, order[i], order[j], order[m]]
    return [kind, order[i], order[j], order[m]]


def _random_fact(rng: random.Random, constant: int, order: list[int]) -> list:
    early = order[: max(2, len(order) // 2)]
    if rng.random() < 0.2:
        p, q = rng.sample(early, 2)
        return ["either", constant, p, q]
    return ["is", constant, rng.choice(early), rng.random() < 0.75]


@register
class Folio(Task):
    """FOLIO-style reasoning: do the premises entail the conclusion (True), its negation (False),
    or neither (Unknown)?

    Worlds use made-up category nouns so world knowledge cannot interfere. The label comes from
    :func:`entailment_label`, an exact model check (see :mod:`datamodules.enigmata.fol` for why
    ground reasoning over the named constants is complete for this fragment). Labels are drawn
    uniformly; the conclusion is never a premise fact (so True/False need at least one rule) and
    is about a noun some rule mentions.
    """

    name = "FOLIO"
    category = "Logic"
    presets = {
        "easy": {"num_predicates": 4, "num_rules": 3, "num_constants": 1, "facts_per_constant": 1},
        "medium": {"num_predicates": 6, "num_rules": 5, "num_constants": 2, "facts_per_constant": 2},
        "hard": {"num_predicates": 8, "num_rules": 8, "num_constants": 3, "facts_per_constant": 2},
    }
    test_knobs = [{"num_predicates": 3, "num_rules": 1, "num_constants": 1, "facts_per_constant": 1}, {"num_predicates": 10, "num_rules": 12, "num_constants": 5}]

    def build(self, rng, num_predicates, num_rules, num_constants, facts_per_constant):
        if not 3 <= num_predicates <= len(FOL_NOUNS) or not 1 <= num_constants <= len(FOL_NAMES) or num_rules < 1 or facts_per_constant < 1:
            raise ValueError(f"FOLIO: need 3 <= num_predicates <= {len(FOL_NOUNS)}, 1 <= num_constants <= {len(FOL_NAMES)}, num_rules >= 1, facts_per_constant >= 1")
        wanted = rng.choice((TRUE, FALSE, UNKNOWN))
        nouns = rng.sample(FOL_NOUNS, num_predicates)
        names = rng.sample(FOL_NAMES, num_constants)
        for _ in range(1000):
            order = rng.sample(range(num_predicates), num_predicates)
            rules = [_random_rule(rng, order) for _ in range(num_rules)]
            facts = [_random_fact(rng, c, order) for c in range(num_constants) for _ in range(facts_per_constant)]
            target = rng.randrange(num_constants)
            allowed = world_valuations(rules, facts, list(range(num_constants)), num_predicates)
            if allowed is None:  # inconsistent premises entail everything: draw a new world
                continue
            stated = {f[2] for f in facts if f[0] == "is" and f[1] == target}
            in_rules = {p for r in rules for p in r[1:]}
            candidates = [["is", target, p, pol] for p in sorted(in_rules - stated) for pol in (True, False)]
            rng.shuffle(candidates)
            conclusion = next((c for c in candidates if label_in_world(allowed, c) == wanted), None)
            if conclusion is not None:
                break
        else:
            raise ValueError("FOLIO: could not draw a world with the wanted label; raise num_rules or num_predicates")
        premises = rules + facts
        rng.shuffle(premises)
        text = "\n".join(f"{i + 1}. {render_fol(p, nouns, names)}" for i, p in enumerate(premises))
        question = (
            "Premises:\n"
            f"{text}\n\n"
            f"Conclusion: {render_fol(conclusion, nouns, names)}\n\n"
            "Using only the premises (the words are made up; assume nothing else), decide whether the "
            "conclusion is True (it follows from the premises), False (its negation follows from the "
            "premises) or Unknown (neither follows). Answer with one word: True, False or Unknown."
        )
        metadata = {
            "label": wanted,
            "premises": premises,
            "conclusion": conclusion,
            "num_predicates": num_predicates,
            "num_constants": num_constants,
        }
        return question, wanted, metadata

    def verify(self, answer, metadata):
        if not isinstance(answer, str) or len(answer) > MAX_LABEL_CHARS:
            return False
        word = answer.strip().rstrip(".").strip().lower()
        return word == metadata["label"].lower()

    def corruptions(self, puzzle, rng):
        label = puzzle.metadata["label"]
        return [x for x in (TRUE, FALSE, UNKNOWN) if x != label] + ["True or False", "", "Tru"]


# =============================================================================================
# Zebra (Einstein) puzzles

#: category -> (values, phrase template for "the person with value v"); values are distinct
#: across categories so each answer word names its category.
ZEBRA_CATEGORIES = {
    "name": (("Anna", "Ben", "Cara", "Dan", "Eva"), "{}"),
    "color": (("red", "green", "blue", "yellow", "white"), "the person in the {} house"),
    "pet": (("dog", "cat", "bird", "fish", "horse"), "the {} owner"),
    "drink": (("tea", "coffee", "milk", "juice", "water"), "the person who drinks {}"),
    "hobby": (("chess", "music", "painting", "hiking", "reading"), "the person who enjoys {}"),
    "food": (("pizza", "sushi", "pasta", "salad", "soup"), "the person who eats {}"),
}
ZEBRA_CLUE_WEIGHTS = {"same": 4, "next_to": 2, "left_of": 2, "directly_left": 2, "position": 1, "not_in": 2}
MAX_ZEBRA_ANSWER_CHARS = 1024


def zebra_clue_holds(clue: list, where: list[list[int]]) -> bool:
    """``where[c][v]`` = house (0-based) of value v of category c. Clues are JSON lists:
    [type, c1, v1, c2, v2] for same/next_to/left_of/directly_left, [type, c, v, house] for
    position/not_in."""
    kind = clue[0]
    a = where[clue[1]][clue[2]]
    if kind == "position":
        return a == clue[3]
    if kind == "not_in":
        return a != clue[3]
    b = where[clue[3]][clue[4]]
    if kind == "same":
        return a == b
    if kind == "next_to":
        return abs(a - b) == 1
    if kind == "left_of":
        return a < b
    if kind == "directly_left":
        return a + 1 == b
    raise ValueError(f"unknown clue {kind!r}")


def _clue_categories(clue: list) -> tuple[int, ...]:
    return (clue[1],) if clue[0] in ("position", "not_in") else (clue[1], clue[3])


def _revise(kind: str, dx: int, dy: int) -> tuple[int, int]:
    """Prune the house bitmasks of x and y to values with support under the binary clue."""
    if kind == "same":
        both = dx & dy
        return both, both
    if kind == "next_to":
        return dx & ((dy << 1) | (dy >> 1)), dy & ((dx << 1) | (dx >> 1))
    if kind == "directly_left":
        return dx & (dy >> 1), dy & (dx << 1)
    # left_of: x below the highest house y can take, y above the lowest house x can take
    lowest_x = dx & -dx
    return dx & ((1 << (dy.bit_length() - 1)) - 1), dy & ~((lowest_x << 1) - 1)


def _propagate(domains: list[int], binary: list, n: int, m: int) -> bool:
    """Arc consistency on the clues plus all-different per category (placed values free their
    house for nobody else; a house only one value can take goes to it), to a fixpoint, in place.
    False on a contradiction."""
    full = (1 << n) - 1
    changed = True
    while changed:
        changed = False
        for kind, x, y in binary:
            dx, dy = domains[x], domains[y]
            if not dx or not dy:
                return False
            nx, ny = _revise(kind, dx, dy)
            if nx != dx or ny != dy:
                domains[x], domains[y] = nx, ny
                changed = True
        for c in range(m):
            base = c * n
            doms = domains[base : base + n]
            placed = once = twice = 0
            for d in doms:
                if d & (d - 1) == 0:
                    if d & placed:
                        return False  # two values in one house
                    placed |= d
                twice |= once & d
                once |= d
            if once != full:
                return False  # some house can take no value of this category
            hidden = once & ~twice  # houses only one value can take
            for v, d in enumerate(doms):
                if d & (d - 1):
                    nd = d & ~placed
                    if d & hidden:
                        nd = d & hidden
                    if nd != d:
                        if not nd or nd & (nd - 1) and nd & hidden:
                            return False  # one value would need two houses
                        domains[base + v] = nd
                        changed = True
    return True


def zebra_solutions(clues: list, n: int, m: int, limit: int = 2) -> list[list[list[int]]]:
    """Solutions (``where`` tables) of a puzzle with ``n`` houses and ``m`` categories, at most
    ``limit``: one variable per (category, value) with a bitmask of possible houses, propagation
    (:func:`_propagate`) at every node, branching on the smallest undecided domain."""
    full = (1 << n) - 1
    domains = [full] * (n * m)
    binary = []
    for cl in clues:
        x = cl[1] * n + cl[2]
        if cl[0] == "position":
            domains[x] &= 1 << cl[3]
        elif cl[0] == "not_in":
            domains[x] &= ~(1 << cl[3])
        else:
            binary.append((cl[0], x, cl[3] * n + cl[4]))
    found: list = []

    def search(doms: list[int]) -> None:
        if not _propagate(doms, binary, n, m):
            return
        open_vars = [i for i, d in enumerate(doms) if d & (d - 1)]
        if not open_vars:
            found.append([[doms[c * n + v].bit_length() - 1 for v in range(n)] for c in range(m)])
            return
        var = min(open_vars, key=lambda i: bin(doms[i]).count("1"))
        d = doms[var]
        while d and len(found) < limit:
            bit = d & -d
            d ^= bit
            child = list(doms)
            child[var] = bit
            search(child)

    search(domains)
    return found


def _random_true_clue(rng: random.Random, where: list[list[int]], n: int, m: int) -> list:
    kinds = list(ZEBRA_CLUE_WEIGHTS)
    while True:
        kind = rng.choices(kinds, weights=[ZEBRA_CLUE_WEIGHTS[k] for k in kinds])[0]
        c1, v1 = rng.randrange(m), rng.randrange(n)
        a = where[c1][v1]
        if kind == "position":
            return [kind, c1, v1, a]
        if kind == "not_in":
            return [kind, c1, v1, rng.choice([h for h in range(n) if h != a])]
        c2 = rng.randrange(m)
        if kind == "same":
            if c2 == c1:
                continue
            return [kind, c1, v1, c2, where[c2].index(a)]
        houses = {"next_to": [a - 1, a + 1], "directly_left": [a + 1], "left_of": list(range(a + 1, n))}[kind]
        houses = [h for h in houses if 0 <= h < n]
        if not houses:
            continue
        clue = [kind, c1, v1, c2, where[c2].index(rng.choice(houses))]
        if clue[1:3] != clue[3:5]:
            return clue


def _unique_clue_prefix(rng: random.Random, where: list[list[int]], n: int, m: int) -> list:
    """The shortest prefix of a random sequence of distinct true clues that has exactly one
    solution, found with O(log length) solver calls (galloping, then bisection). The sequence
    ends with a position clue for every value, so some prefix is always unique."""
    pool: list = []
    for _ in range(6 * n * m):
        clue = _random_true_clue(rng, where, n, m)
        if clue not in pool:
            pool.append(clue)
    pool += [["position", c, v, where[c][v]] for c in range(m) for v in range(n)]
    unique = lambda k: len(zebra_solutions(pool[:k], n, m)) == 1  # noqa: E731
    low, high = 0, min(4, len(pool))  # invariant: pool[:low] is not unique
    while not unique(high):
        low, high = high, min(2 * high, len(pool))
    while high - low > 1:
        mid = (low + high) // 2
        if unique(mid):
            high = mid
        else:
            low = mid
    return pool[:high]


def render_zebra_clue(clue: list, categories: list[str]) -> str:
    def who(c: int, v: int) -> str:
        values, template = ZEBRA_CATEGORIES[categories[c]]
        return template.format(values[v])

    kind = clue[0]
    a = who(clue[1], clue[2])
    if kind == "position":
        text = f"{a} lives in house {clue[3] + 1}"
    elif kind == "not_in":
        text = f"{a} does not live in house {clue[3] + 1}"
    else:
        b = who(clue[3], clue[4])
        text = {
            "same": f"{a} is the same person as {b}",
            "next_to": f"{a} lives next to {b}",
            "left_of": f"{a} lives somewhere to the left of {b}",
            "directly_left": f"{a} lives directly to the left of {b}",
        }[kind]
    return text[0].upper() + text[1:] + "."


def parse_zebra(answer: str, categories: list[str], n: int) -> list[list[int]] | None:
    """``1: red, dog, tea`` lines -> ``where`` table, or None unless the answer names, for every
    house 1..n exactly once, one value of every category (any order within a line) and every value
    once per category."""
    if not isinstance(answer, str) or len(answer) > MAX_ZEBRA_ANSWER_CHARS:
        return None
    m = len(categories)
    lookup = {}
    for c, cat in enumerate(categories):
        for v, value in enumerate(ZEBRA_CATEGORIES[cat][0][:n]):
            lookup[value.lower()] = (c, v)
    where = [[-1] * n for _ in range(m)]
    seen_houses = set()
    lines = [ln for ln in answer.splitlines() if ln.strip()]
    if len(lines) != n:
        return None
    for line in lines:
        head, sep, rest = line.partition(":")
        head = head.strip().lower().removeprefix("house").strip()
        if not sep or not head.isdigit() or len(head) > 2:
            return None
        house = int(head) - 1
        if not 0 <= house < n or house in seen_houses:
            return None
        seen_houses.add(house)
        words = [w.strip().rstrip(".").lower() for w in rest.split(",")]
        if len(words) != m:
            return None
        cats_here = set()
        for w in words:
            if w not in lookup:
                return None
            c, v = lookup[w]
            if c in cats_here or where[c][v] != -1:
                return None
            cats_here.add(c)
            where[c][v] = house
    return where


def format_zebra(where: list[list[int]], categories: list[str], n: int) -> str:
    lines = []
    for house in range(n):
        values = [ZEBRA_CATEGORIES[cat][0][where[c].index(house)] for c, cat in enumerate(categories)]
        lines.append(f"{house + 1}: {', '.join(values)}")
    return "\n".join(lines)


@register
class ZebraLogic(Task):
    """Einstein grid puzzle: houses in a row, each with one value of every category.

    True clues are drawn from a hidden solution until the backtracking solver finds exactly one
    solution, then clues whose removal keeps it unique are dropped (in random order). The verifier
    checks that the table is a full assignment and that every clue holds; by that uniqueness the
    only passing table is the hidden solution.
    """

    name = "zebra_logic"
    category = "Logic"
    presets = {
        "easy": {"houses": 3, "min_categories": 2, "max_categories": 3},
        "medium": {"houses": 4, "min_categories": 3, "max_categories": 4},
        "hard": {"houses": 5, "min_categories": 4, "max_categories": 5},
    }
    test_knobs = [{"houses": 2, "min_categories": 2, "max_categories": 2}, {"houses": 3, "min_categories": 6, "max_categories": 6}]

    def build(self, rng, houses, min_categories, max_categories):
        n = houses
        if not 2 <= n <= 5 or not 2 <= min_categories <= max_categories <= len(ZEBRA_CATEGORIES):
            raise ValueError(f"zebra_logic: need 2 <= houses <= 5 and 2 <= min_categories <= max_categories <= {len(ZEBRA_CATEGORIES)}")
        m = rng.randint(min_categories, max_categories)
        categories = rng.sample(sorted(ZEBRA_CATEGORIES), m)
        where = []
        for _ in range(m):
            perm = list(range(n))
            rng.shuffle(perm)
            where.append(perm)
        clues = _unique_clue_prefix(rng, where, n, m)
        for clue in rng.sample(clues, len(clues)):
            rest = [c for c in clues if c is not clue]
            if len(zebra_solutions(rest, n, m)) == 1:
                clues = rest
        header = ", ".join(categories)
        value_lines = "\n".join(f"- {cat}: {', '.join(ZEBRA_CATEGORIES[cat][0][:n])}" for cat in categories)
        clue_lines = "\n".join(f"{i + 1}. {render_zebra_clue(c, categories)}" for i, c in enumerate(clues))
        question = (
            f"There are {n} houses in a row, numbered 1 to {n} from left to right. Each house has one "
            f"person, and each category below has one value per house (every value is used exactly "
            f"once):\n{value_lines}\n\n"
            f"Clues (\"next to\" means in an adjacent house; \"left of\" means a smaller house number):\n{clue_lines}\n\n"
            f"Find the full assignment. Answer with one line per house, in the form "
            f"\"house number: {header}\", for example \"1: {', '.join(f'<{cat}>' for cat in categories)}\"."
        )
        metadata = {"houses": n, "categories": categories, "clues": clues}
        return question, format_zebra(where, categories, n), metadata

    def verify(self, answer, metadata):
        where = parse_zebra(answer, metadata["categories"], metadata["houses"])
        return where is not None and all(zebra_clue_holds(cl, where) for cl in metadata["clues"])

    def corruptions(self, puzzle, rng):
        n, categories = puzzle.metadata["houses"], puzzle.metadata["categories"]
        body = puzzle.answer[len("<answer>") : -len("</answer>")]
        gold = parse_zebra(body, categories, n)
        c = rng.randrange(len(categories))
        v1, v2 = rng.sample(range(n), 2)
        swapped = [list(w) for w in gold]
        swapped[c][v1], swapped[c][v2] = swapped[c][v2], swapped[c][v1]
        lines = body.splitlines()
        first_value = ZEBRA_CATEGORIES[categories[0]][0]
        duplicated = lines[1].split(":")[0] + ":" + lines[0].split(":", 1)[1]  # house 2 copies house 1
        return [
            format_zebra(swapped, categories, n),  # two houses swap one category
            "\n".join(lines[:-1]),  # a house missing
            "\n".join([duplicated] + lines[1:]),  # house 1 missing, house 2 twice
            "\n".join(lines[:-1] + [lines[-1].replace(first_value[gold[0].index(n - 1)], "zebra")]),  # unknown value
        ]
