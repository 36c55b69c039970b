"""Crypto, Arithmetic and Logic Enigmata tasks: gold answers pass, corruptions fail, the rules
are checked on hand-built instances (including valid answers that differ from the gold one), and
the generators' solvers agree with brute-force references written independently here."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import pytest

from datamodules.enigmata import TASKS
from datamodules.enigmata import crypto as C
from datamodules.enigmata.arith_expr import ExpressionError, evaluate, is_sub_multiset, solve_all_numbers, strip_claimed_result
from datamodules.enigmata.base import DIFFICULTIES, NO_SOLUTION
from datamodules.enigmata.fol import FALSE, TRUE, UNKNOWN, entailment_label
from datamodules.enigmata.logic import kk_consistent, parse_zebra, zebra_clue_holds, zebra_solutions

MINE = ["crypto_KKA", "crypto_KPA", "game24", "countdown", "knights_and_knaves", "FOLIO", "zebra_logic"]


def body(puzzle) -> str:
    return puzzle.answer[len("<answer>") : -len("</answer>")]


# --------------------------------------------------------------------------------------------
# Every task: registration, 50 gold items per difficulty, corruptions, non-default knobs, speed


# --------------------------------------------------------------------------------------------
# Arithmetic expressions


def test_evaluate_is_exact_and_reports_numbers():
    assert evaluate("8 / (3 - 8 / 3)") == (Fraction(24), [3, 3, 8, 8])
    assert evaluate("(8/3)*9") == (Fraction(24), [3, 8, 9])
    assert evaluate("1 + 2 * 3") == (Fraction(7), [1, 2, 3])  # precedence
    assert evaluate("(1 + 2) * 3") == (Fraction(9), [1, 2, 3])
    assert evaluate("10 - 4 - 3") == (Fraction(3), [3, 4, 10])  # left associative
    assert evaluate("12 / 4 / 3") == (Fraction(1), [3, 4, 12])
    assert evaluate("3 × 8 ÷ 1") == (Fraction(24), [1, 3, 8])


@pytest.mark.parametrize("text", ["1/0", "2 / (3 - 3)", "-3 + 27", "2 3", "(1 + 2", "1 + 2)", "", "2 ** 3",
                                  "__import__('os')", "1e3", "1.5 * 16", "(" * 40 + "1" + ")" * 40, "1234567 - 1",
                                  "1+" * 200 + "1"])
def test_evaluate_rejects_malformed_or_unbounded(text):
    with pytest.raises(ExpressionError):
        evaluate(text)


def test_claimed_result_and_sub_multiset():
    assert strip_claimed_result("(1 + 2) * 8 = 24", 24) == "(1 + 2) * 8 "
    assert strip_claimed_result("(1 + 2) * 8 = 25", 24) == "(1 + 2) * 8 = 25"
    assert is_sub_multiset([5, 5], [5, 1, 5])
    assert not is_sub_multiset([5, 5], [5, 1])
    assert not is_sub_multiset([7], [1, 2])


def _reference_reachable(values: tuple[Fraction, ...], target: Fraction, memo: dict) -> bool:
    """Independent brute force: combine any two values with any operation, recurse."""
    key = tuple(sorted(values))
    if key in memo:
        return memo[key]
    if len(values) == 1:
        result = values[0] == target
    else:
        result = False
        for i, j in itertools.combinations(range(len(values)), 2):
            a, b = values[i], values[j]
            rest = tuple(v for k, v in enumerate(values) if k not in (i, j))
            outs = [a + b, a - b, b - a, a * b] + ([a / b] if b else []) + ([b / a] if a else [])
            if any(_reference_reachable(rest + (o,), target, memo) for o in outs):
                result = True
                break
    memo[key] = result
    return result


def test_game24_solver_matches_brute_force():
    rng = random.Random(7)
    cases = [[rng.randint(1, 13) for _ in range(4)] for _ in range(60)] + [[rng.randint(1, 13) for _ in range(5)] for _ in range(4)]
    cases += [[1, 1, 1, 1], [3, 3, 8, 8], [1, 5, 5, 5], [4, 4, 10, 10], [1, 1, 1, 1, 1], [7, 7, 7, 7, 7]]
    for numbers in cases:
        expected = _reference_reachable(tuple(Fraction(x) for x in numbers), Fraction(24), {})
        found = solve_all_numbers(numbers, 24)
        assert (found is not None) == expected, numbers
        if found is not None:
            assert evaluate(found) == (Fraction(24), sorted(numbers))


def test_game24_rules_on_hand_built_instance():
    task = TASKS["game24"]
    meta = {"numbers": [1, 2, 3, 4], "target": 24, "solvable": True}
    for good in ["1 * 2 * 3 * 4", "(1 + 2 + 3) * 4", "4 * (3 + 2 + 1)", "(1 + 3) * (2 + 4)", "(1 + 2 + 3) * 4 = 24"]:
        assert task.verify(good, meta), good
    for bad in ["2 * 3 * 4", "(1 + 2 + 3) * 4 * 1", "4 * 6", "1 + 2 + 3 + 4", "(1 + 2 + 3) * 4 = 25", NO_SOLUTION,
                "24", "(1 - 2 + 3) * 4 / 0"]:
        assert not task.verify(bad, meta), bad
    impossible = {"numbers": [1, 1, 1, 1], "target": 24, "solvable": False}
    assert task.verify("No solution.", impossible) and task.verify(NO_SOLUTION, impossible)
    assert not task.verify("(1 + 1) * (1 + 1)", impossible)


def test_game24_has_unsolvable_items_and_they_are_truly_unsolvable():
    task = TASKS["game24"]
    for difficulty in DIFFICULTIES:
        flags = [task.generate(seed, difficulty).metadata["solvable"] for seed in range(60)]
        share = flags.count(False) / len(flags)
        assert 0.03 <= share <= 0.35, (difficulty, share)
    for seed in range(40):
        puzzle = task.generate(seed, "easy")
        if not puzzle.metadata["solvable"]:
            numbers = puzzle.metadata["numbers"]
            assert not _reference_reachable(tuple(Fraction(x) for x in numbers), Fraction(24), {})


def test_countdown_rules_on_hand_built_instance():
    task = TASKS["countdown"]
    meta = {"numbers": [25, 50, 3, 7, 2], "target": 150}
    for good in ["50 * 3", "3 * 50", "(25 + 50) * 2", "(50 - 25) * (7 - 3 + 2)", "50 * 3 = 150"]:
        assert task.verify(good, meta), good
    for bad in ["25 * (7 - 2) + 25", "(7 - 2 + 25) * (50 / 25 + 3)", "50 * 3 + 2 - 2 + 25 - 25", "150", "75 * 2", "50 * 3 / 0", NO_SOLUTION, "50 * 3 = 149"]:
        assert not task.verify(bad, meta), bad
    # a number listed twice may be used twice, not three times
    twice = {"numbers": [5, 5, 6], "target": 30}
    assert task.verify("5 * 6", twice) and task.verify("5 * 5 + 5 / 5 * 5", {"numbers": [5, 5, 5, 5, 5], "target": 30})
    assert not task.verify("5 * 5 + 5", twice)


def test_countdown_targets_in_range_and_gold_uses_numbers_at_most_once():
    task = TASKS["countdown"]
    for difficulty, (lo, hi, count) in {"easy": (30, 100, 5), "medium": (50, 200, 6), "hard": (100, 500, 7)}.items():
        for seed in range(30):
            puzzle = task.generate(seed, difficulty)
            meta = puzzle.metadata
            assert lo <= meta["target"] <= hi and len(meta["numbers"]) == count
            value, used = evaluate(body(puzzle))
            assert value == meta["target"] and is_sub_multiset(used, meta["numbers"])


# --------------------------------------------------------------------------------------------
# Crypto


def test_ciphers_on_published_vectors():
    assert C.caesar("HELLO WORLD", 3) == "KHOOR ZRUOG"
    assert C.vigenere("ATTACK AT DAWN", "LEMON") == "LXFOPV EF RNHR"
    assert C.affine("AFFINE CIPHER", 5, 8) == "IHHWVC SWFRCP"
    assert C.atbash("HELLO") == "SVOOL"
    assert C.autokey("ATTACKATDAWN", "QUEENLY") == "QNXEPVYTWTWP"
    assert C.rail_fence("WEAREDISCOVEREDFLEEATONCE", 3) == "WECRLTEERDSOEEFEAOCAIVDEN"
    assert C.playfair("HIDETHEGOLDINTHE", "PLAYFAIREXAMPLE") == "BMODZBXDNABEKUDM"
    assert C.hill("HELP", [3, 3, 2, 5]) == "HIAT"
    assert C.substitution("ABC", "QWERTYUIOPASDFGHJKLZXCVBNM") == "QWE"


def test_every_cipher_round_trips():
    rng = random.Random(3)
    for cipher in C.CIPHER_RULES:
        for _ in range(20):
            key = C.random_key(cipher, rng)
            plain = C.random_plaintext(cipher, rng, 1, 6)
            ct = C.encrypt(cipher, plain, key)
            assert C.decrypt(cipher, ct, key) == (C.letters_only(plain) if cipher in C.LETTER_STREAM_CIPHERS else plain)


def test_kka_answer_normalisation():
    task = TASKS["crypto_KKA"]
    meta = {"plaintext": "ATTACK AT DAWN"}
    for good in ["ATTACK AT DAWN", "attack at dawn", "ATTACKATDAWN", " Attack\nat  Dawn "]:
        assert task.verify(good, meta)
    for bad in ["ATTACK AT DUSK", "ATTACK-AT-DAWN", "ATTACK AT DAWN.", "ATTACKATDAW", "x" * 2000]:
        assert not task.verify(bad, meta)


def _brute_force_keys(meta: dict) -> list:
    """Every key of the family consistent with the known pair, by exhaustive search."""
    cipher, known, known_ct = meta["cipher"], meta["known_plaintext"], meta["known_ciphertext"]
    if cipher == "caesar":
        return [k for k in range(26) if C.encrypt(cipher, known, k) == known_ct]
    if cipher == "affine":
        return [[a, b] for a in range(26) for b in range(26) if a % 2 and a % 13
                and C.encrypt(cipher, known, [a, b]) == known_ct]
    if cipher == "rail_fence":
        return [r for r in range(2, 200) if C.encrypt(cipher, known, r) == known_ct]
    p, c = C.letters_only(known), C.letters_only(known_ct)
    if cipher in ("vigenere", "autokey"):
        # both shift letter i < key length by key letter i: search each key letter, then check all
        key_len = len(meta["key"])
        options = [[k for k in C.ALPHABET if (ord(c[i]) - ord(p[i]) - (ord(k) - 65)) % 26 == 0] for i in range(key_len)]
        return ["".join(ks) for ks in itertools.product(*options) if C.encrypt(cipher, known, "".join(ks)) == known_ct]
    if cipher == "hill":
        # rows of K are independent: row r maps every plaintext pair (x, y) to ciphertext letter r
        rows = []
        for r in range(2):
            rows.append([(a, b) for a in range(26) for b in range(26)
                         if all((a * (ord(p[i]) - 65) + b * (ord(p[i + 1]) - 65)) % 26 == ord(c[i + r]) - 65 for i in range(0, len(p), 2))])
        return [[a, b, cc, d] for (a, b), (cc, d) in itertools.product(*rows) if C.hill_inverse([a, b, cc, d]) is not None]
    raise AssertionError(cipher)


def test_kpa_key_pins_down_the_answer():
    task = TASKS["crypto_KPA"]
    seen = set()
    for difficulty in DIFFICULTIES:
        for seed in range(40):
            meta = task.generate(seed, difficulty).metadata
            seen.add(meta["cipher"])
            if meta["cipher"] == "substitution":
                # every ciphertext letter to decrypt was seen in the known ciphertext
                assert set(C.letters_only(meta["ciphertext"])) <= set(C.letters_only(meta["known_ciphertext"]))
                continue
            keys = _brute_force_keys(meta)
            assert meta["key"] in keys
            plaintexts = {C.decrypt(meta["cipher"], meta["ciphertext"], k) for k in keys}
            assert plaintexts == {C.decrypt(meta["cipher"], meta["ciphertext"], meta["key"])}
    assert seen == {"caesar", "rail_fence", "affine", "vigenere", "autokey", "substitution", "hill"}


# --------------------------------------------------------------------------------------------
# Knights and knaves


def test_knights_and_knaves_hand_built():
    task = TASKS["knights_and_knaves"]
    # Alice: "We are both knaves." -> Alice is a knave (a knight could not say it), so the
    # statement is false, so Bob is a knight.
    meta = {"names": ["Alice", "Bob"], "statements": [[0, ["and", ["is", 0, False], ["is", 1, False]]]]}
    assert task.verify("Alice: knave, Bob: knight", meta)
    assert task.verify("bob: Knight\nalice: knave", meta)
    for bad in ["Alice: knight, Bob: knight", "Alice: knave, Bob: knave", "Alice: knight, Bob: knave", "Alice: knave",
                "Alice: knave, Bob: knight, Alice: knave", "Alice: knave, Bob: liar", "Alice knave, Bob knight"]:
        assert not task.verify(bad, meta), bad


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_knights_and_knaves_exactly_one_assignment_passes(difficulty):
    task = TASKS["knights_and_knaves"]
    for seed in range(25):
        puzzle = task.generate(seed, difficulty)
        names = puzzle.metadata["names"]
        passing = []
        for roles in itertools.product(("knight", "knave"), repeat=len(names)):
            answer = ", ".join(f"{n}: {r}" for n, r in zip(names, roles))
            if task.verify(answer, puzzle.metadata):
                passing.append(answer)
        assert passing == [body(puzzle)]


def test_knights_and_knaves_consistency_semantics():
    # "Exactly 1 of us is a knight" said by Alice with Bob silent about it
    statements = [[0, ["exactly", 1]], [1, ["is", 0, True]]]
    assert kk_consistent(statements, (False, False))  # Alice lies (0 knights), Bob lies
    assert not kk_consistent(statements, (True, False))  # Bob, a knave, would be telling the truth


# --------------------------------------------------------------------------------------------
# FOLIO


def _reference_label(premises: list, conclusion: list, k: int, constants: int) -> str | None:
    """Brute force over every interpretation of all predicates at all named constants jointly."""
    def holds(st, val):  # val: tuple of per-constant bitmasks
        kind = st[0]
        if kind in ("is", "either"):
            bits = val[st[1]]
            if kind == "is":
                return bool(bits >> st[2] & 1) == st[3]
            return bool(bits >> st[2] & 1 or bits >> st[3] & 1)
        for bits in val:  # universal rules: every element
            has = [bool(bits >> i & 1) for i in range(k)]
            ok = {"all": lambda r: not has[r[1]] or has[r[2]], "no": lambda r: not (has[r[1]] and has[r[2]]),
                  "all_or": lambda r: not has[r[1]] or has[r[2]] or has[r[3]],
                  "all_both": lambda r: not (has[r[1]] and has[r[2]]) or has[r[3]]}[kind](st)
            if not ok:
                return False
        return True

    models = [v for v in itertools.product(range(1 << k), repeat=constants) if all(holds(p, v) for p in premises)]
    if not models:
        return None
    truth = {holds(conclusion, v) for v in models}
    return TRUE if truth == {True} else FALSE if truth == {False} else UNKNOWN


def test_folio_hand_built_labels():
    A, B, Cc = 0, 1, 2
    assert entailment_label([["all", A, B], ["all", B, Cc]], [["is", 0, A, True]], ["is", 0, Cc, True], 3) == TRUE
    assert entailment_label([["no", A, B]], [["is", 0, A, True]], ["is", 0, B, True], 3) == FALSE
    assert entailment_label([["all_or", A, B, Cc]], [["is", 0, A, True], ["is", 0, B, False]], ["is", 0, Cc, True], 3) == TRUE
    assert entailment_label([["all", A, B]], [["is", 0, B, True]], ["is", 0, A, True], 3) == UNKNOWN  # affirming the consequent
    assert entailment_label([["all_both", A, B, Cc]], [["is", 0, A, True]], ["is", 0, Cc, True], 3) == UNKNOWN
    assert entailment_label([["all", A, B]], [["is", 0, A, True], ["is", 0, B, False]], ["is", 0, Cc, True], 3) is None
    # a fact about another constant does not leak
    assert entailment_label([["all", A, B]], [["is", 1, A, True]], ["is", 0, B, True], 3) == UNKNOWN


@pytest.mark.parametrize("difficulty", ["easy", "medium"])
def test_folio_labels_match_joint_model_enumeration(difficulty):
    task = TASKS["FOLIO"]
    for seed in range(15):
        meta = task.generate(seed, difficulty).metadata
        expected = _reference_label(meta["premises"], meta["conclusion"], meta["num_predicates"], meta["num_constants"])
        assert expected == meta["label"], seed


def test_folio_labels_are_balanced_and_answers_strict():
    task = TASKS["FOLIO"]
    labels = [task.generate(seed, "medium").metadata["label"] for seed in range(90)]
    assert all(labels.count(x) >= 18 for x in (TRUE, FALSE, UNKNOWN)), labels
    meta = {"label": TRUE}
    assert task.verify("true", meta) and task.verify(" True. ", meta)
    assert not task.verify("True or False", meta) and not task.verify("It is True", meta)


# --------------------------------------------------------------------------------------------
# Zebra


def _brute_force_zebra(clues: list, n: int, m: int) -> list:
    tables = []
    for combo in itertools.product(itertools.permutations(range(n)), repeat=m):
        where = [list(p) for p in combo]
        if all(zebra_clue_holds(c, where) for c in clues):
            tables.append(where)
    return tables


def test_zebra_solver_matches_brute_force():
    task = TASKS["zebra_logic"]
    for seed in range(12):
        meta = task.generate(seed, "easy").metadata
        n, m = meta["houses"], len(meta["categories"])
        brute = _brute_force_zebra(meta["clues"], n, m)
        assert len(brute) == 1
        assert zebra_solutions(meta["clues"], n, m) == brute
        # dropping clues: the solver's count (capped at 3) agrees with brute force
        partial = meta["clues"][: len(meta["clues"]) // 2]
        assert len(zebra_solutions(partial, n, m, limit=3)) == min(3, len(_brute_force_zebra(partial, n, m)))


def test_zebra_hand_built_rules():
    task = TASKS["zebra_logic"]
    # 3 houses; color (red green blue), pet (dog cat bird)
    meta = {"houses": 3, "categories": ["color", "pet"],
            "clues": [["position", 0, 0, 0], ["directly_left", 1, 0, 0, 2]]}
    # red in house 1; the dog owner lives directly left of the blue house: four solutions
    assert task.verify("1: red, dog\n2: blue, bird\n3: green, cat", meta)
    assert task.verify("1: red, cat\n2: green, dog\n3: blue, bird", meta)  # a second solution: both pass
    assert task.verify("House 3: bird, blue\nhouse 1: cat, red\n2: dog, green", meta)  # any line/value order
    for bad in ["1: red, dog\n2: green, bird\n3: blue, cat",  # dog not directly left of blue
                "1: red, dog\n2: blue, bird",  # a house missing
                "1: red, dog\n2: blue, dog\n3: green, cat",  # dog twice, bird unused
                "1: red, dog\n1: blue, bird\n3: green, cat",  # house 1 twice
                "1: red, dog, cat\n2: blue, bird\n3: green, cat",
                "1: red, zebra\n2: blue, bird\n3: green, cat",
                "1: red, dog\n2: blue, bird\n4: green, cat"]:
        assert not task.verify(bad, meta), bad
    assert parse_zebra("1: red, dog\n2: blue, bird\n3: green, cat", ["color", "pet"], 3) == [[0, 2, 1], [0, 2, 1]]


def test_zebra_puzzles_are_minimal():
    """Every clue is needed: removing any one leaves several solutions."""
    task = TASKS["zebra_logic"]
    for seed in range(5):
        meta = task.generate(seed, "medium").metadata
        n, m = meta["houses"], len(meta["categories"])
        for i in range(len(meta["clues"])):
            rest = meta["clues"][:i] + meta["clues"][i + 1:]
            assert len(zebra_solutions(rest, n, m)) == 2
