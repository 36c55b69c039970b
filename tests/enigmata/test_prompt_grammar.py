"""Article and number agreement in every generated prompt (task x difficulty x a few seeds).

The patterns are the ones a regular expression can judge reliably: the article ``a`` before a word
starting with a vowel letter, ``an`` before a consonant letter, and ``1`` before a word ending in
``s`` that is a plural. Letters used as labels (``move A``, ``T, A and .``) are upper case and
followed by another label or a non-word (``A A .`` in a grid), so only an article followed by a
lower-case word is judged.
"""

from __future__ import annotations

import re

import pytest

from datamodules.enigmata import DIFFICULTIES, TASKS

#: Vowel-letter words that take "a" (they sound like "you"/"wun") and consonant-letter words taking "an".
A_BEFORE_VOWEL_OK = re.compile(r"^(one|once|uni|use|usu|eu|ur)", re.I)
AN_BEFORE_CONSONANT_OK = re.compile(r"^(hour|honest|honou?r)")
#: Words ending in "s" after "1" that are not plurals.
NOT_PLURAL = {"is", "was", "has", "this", "its", "as", "plus", "minus", "times", "yes", "does", "always", "across", "gives", "becomes", "means"}

A_VOWEL = re.compile(r"(?:(?<![\w'-])a|(?:^|(?<=[.!?:]\s))A) ([a-z]\w*)", re.M)
AN_CONSONANT = re.compile(r"(?<![\w'-])[aA]n ([a-z]\w*)")
ONE_PLURAL = re.compile(r"(?:^|(?<=[\s(]))1 ([a-z]+s)\b", re.M)


def grammar_mistakes(text: str) -> list[str]:
    found = []
    for m in A_VOWEL.finditer(text):
        word = m.group(1)
        if word[0] in "aeiouAEIOU" and not A_BEFORE_VOWEL_OK.match(word):
            found.append(m.group(0))
    for m in AN_CONSONANT.finditer(text):
        word = m.group(1)
        if word[0] not in "aeiouAEIOU" and not AN_BEFORE_CONSONANT_OK.match(word):
            found.append(m.group(0))
    for m in ONE_PLURAL.finditer(text):
        if m.group(1) not in NOT_PLURAL and not m.group(1).endswith("ss"):
            found.append(m.group(0))
    return found


def test_the_checker_catches_the_reported_mistakes_and_passes_good_text():
    assert grammar_mistakes("It is a operation, applied") == ["a operation"]
    assert grammar_mistakes("at most 1 positions away") == ["1 positions"]
    assert grammar_mistakes("A operation. an list") == ["A operation", "an list"]
    good = "It is a single operation, an item, a unique one. Move A applied. T, A and . 1 position, i+1 positions, 1 is odd"
    assert grammar_mistakes(good) == []


@pytest.mark.parametrize("difficulty", DIFFICULTIES)
def test_generated_prompts_have_no_article_or_plural_mistakes(difficulty):
    mistakes = {}
    for name, task in TASKS.items():
        for seed in range(3):
            found = grammar_mistakes(task.generate(seed, difficulty).prompt)
            if found:
                mistakes[f"{name}/{seed}"] = sorted(set(found))
    assert mistakes == {}
