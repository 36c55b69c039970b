"""Enigmata Crypto tasks: ``crypto_KKA`` (known key) and ``crypto_KPA`` (known plaintext).

All ciphers work on the letters A-Z. The letter-wise ciphers (caesar, atbash, affine, vigenere,
autokey, substitution) keep word spaces in the ciphertext (the key stream advances on letters
only); the transposition and digraph ciphers (rail_fence, playfair, hill) act on the letters with
spaces removed. An answer is compared with the plaintext after dropping all whitespace and case,
so ``attack at dawn`` and ``ATTACKATDAWN`` are the same answer. Decryption is a function of
(ciphertext, key), and for KPA the key is checked at generation to be pinned down by the known
pair, so the plaintext is the only correct answer by construction.
"""

from __future__ import annotations

import random
import string

from datamodules.enigmata.base import Puzzle, Task, register

ALPHABET = string.ascii_uppercase
#: KPA rail-fence key search bound (more rails than letters is the identity for both texts).
MAX_RAILS_SEARCHED = 200
#: Answers longer than this are rejected before any processing (plaintexts are < 100 letters).
MAX_PLAINTEXT_CHARS = 1024

#: Common English words the plaintexts are drawn from (upper case, letters only).
WORDS = """
ABOUT ABOVE ACROSS ACT ADD AFTER AGAIN AGE AGO AIR ALL ALONG ALSO ALWAYS AND ANIMAL ANSWER ANY
APPLE AREA ARM ARMY AROUND ART ASK AWAY BABY BACK BALL BANK BASE BEAR BEAUTY BED BEFORE BEGIN
BEHIND BELL BEST BETTER BIG BIRD BLACK BLUE BOARD BOAT BODY BONE BOOK BORN BOTH BOTTOM BOX BOY
BRIDGE BRING BROTHER BROWN BUILD BURN BUSY BUY CALL CAME CAMP CAPTAIN CAR CARD CARE CARRY CASE
CAT CATCH CELL CENTER CHAIR CHANCE CHANGE CHART CHECK CHILD CITY CLASS CLEAN CLEAR CLIMB CLOCK
CLOSE CLOUD COAST COAT COLD COLOR COME COMMON CORN CORNER COUNT COUNTRY COURSE COVER CROSS CROWD
DANCE DARK DAY DEEP DESERT DINNER DOCTOR DOG DOOR DOWN DRAW DREAM DRESS DRINK DRIVE DROP DRY
EACH EARLY EARTH EAST EASY EAT EDGE EGG EIGHT ENGINE ENOUGH ENTER EVEN EVENING EVER EVERY EYE
FACE FACT FALL FAMILY FAR FARM FAST FATHER FEAR FEEL FIELD FIGHT FIGURE FILL FIND FINE FINGER
FIRE FIRST FISH FIVE FLAT FLOOR FLOWER FLY FOLLOW FOOD FOOT FOREST FORM FOUR FREE FRIEND FRONT
FRUIT FULL GAME GARDEN GATE GIFT GIRL GIVE GLASS GOLD GOOD GRASS GREAT GREEN GROUND GROUP GROW
GUIDE HAIR HALF HAND HAPPY HARD HEAD HEAR HEART HEAT HEAVY HELP HIGH HILL HISTORY HOLD HOME HOPE
HORSE HOT HOUR HOUSE HUNDRED HUNT IDEA INCH INSIDE IRON ISLAND JOURNEY JUMP KEEP KIND KING
KNOW LAKE LAND LARGE LAST LATE LAUGH LEAD LEARN LEFT LETTER LEVEL LIGHT LINE LION LIST LISTEN
LITTLE LIVE LONG LOOK LOUD LOVE LOW MACHINE MAIN MAKE MAP MARK MARKET MATTER MEAN MEET MELODY
METAL MIDDLE MIGHT MILE MILK MIND MINUTE MOMENT MONEY MONTH MOON MORNING MOTHER MOUNTAIN MOUTH
MOVE MUSIC NAME NATION NEAR NEED NEVER NEW NEXT NIGHT NINE NOISE NORTH NOTE NOTHING NUMBER OCEAN
OFFER OFFICE OLD OPEN ORDER OTHER PAGE PAINT PAPER PARK PART PARTY PASS PATH PEOPLE PERSON PIECE
PLACE PLAIN PLAN PLANT PLAY POINT POOR PORT POWER PRESS PRINT PULL PUSH QUEEN QUESTION QUICK QUIET
RAIN RAISE REACH READ READY RED REST RICH RIDE RIGHT RING RISE RIVER ROAD ROCK ROOM ROOT ROPE ROUND
RULE RUN SAFE SAIL SALT SAND SAVE SCHOOL SEA SEASON SEAT SECOND SEED SEND SEVEN SHAPE SHIP SHORE
SHORT SHOW SIDE SIGN SILVER SIMPLE SING SISTER SIT SIX SIZE SKY SLEEP SLOW SMALL SMILE SNOW SOFT
SOIL SONG SOUND SOUTH SPACE SPEAK SPEED SPRING SQUARE STAND STAR START STATION STAY STEP STONE
STOP STORM STORY STREET STRONG STUDY SUGAR SUMMER SUN SUPPLY SURE SWIM TABLE TAIL TAKE TALK TEACH
TEAM TELL TEN THICK THIN THINK THREE TIME TINY TODAY TOGETHER TOWN TRACK TRADE TRAIN TRAVEL TREE
TRIP TRUE TRY TURN TWO UNDER UNIT UNTIL VALLEY VOICE VOWEL WAIT WALK WALL WARM WATCH WATER WAVE
WEATHER WEEK WEIGHT WEST WHEEL WHITE WHOLE WIDE WILD WIND WINDOW WING WINTER WISH WOMAN WONDER
WOOD WORD WORK WORLD WRITE YARD YEAR YELLOW YOUNG ZERO
""".split()

# ---------------------------------------------------------------------------------------------
# Ciphers: pure functions on upper-case text. Letter-wise ciphers pass non-letters through.


def _idx(ch: str) -> int:
    return ord(ch) - 65


def _chr(i: int) -> str:
    return chr(i % 26 + 65)


def caesar(text: str, shift: int, decrypt: bool = False) -> str:
    s = -shift if decrypt else shift
    return "".join(_chr(_idx(c) + s) if c.isalpha() else c for c in text)


def atbash(text: str) -> str:
    """A<->Z, B<->Y, ...: its own inverse."""
    return "".join(_chr(25 - _idx(c)) if c.isalpha() else c for c in text)


AFFINE_MULTIPLIERS = (1, 3, 5, 7, 9, 11, 15, 17, 19, 21, 23, 25)  # units mod 26


def affine(text: str, a: int, b: int, decrypt: bool = False) -> str:
    """E(x) = a x + b mod 26, D(y) = a^-1 (y - b) mod 26; ``a`` must be coprime to 26."""
    if decrypt:
        a_inv = pow(a, -1, 26)
        return "".join(_chr(a_inv * (_idx(c) - b)) if c.isalpha() else c for c in text)
    return "".join(_chr(a * _idx(c) + b) if c.isalpha() else c for c in text)


def vigenere(text: str, key: str, decrypt: bool = False) -> str:
    """Letter i of the text (counting letters only) is shifted by key letter i mod len(key)."""
    out, k = [], 0
    for c in text:
        if c.isalpha():
            s = _idx(key[k % len(key)])
            out.append(_chr(_idx(c) - s if decrypt else _idx(c) + s))
            k += 1
        else:
            out.append(c)
    return "".join(out)


def autokey(text: str, key: str, decrypt: bool = False) -> str:
    """Key stream = the key followed by the plaintext itself (letters only)."""
    stream = [_idx(c) for c in key]
    out, k = [], 0
    for c in text:
        if not c.isalpha():
            out.append(c)
            continue
        if decrypt:
            p = (_idx(c) - stream[k]) % 26
            out.append(_chr(p))
            stream.append(p)
        else:
            out.append(_chr(_idx(c) + stream[k]))
            stream.append(_idx(c))
        k += 1
    return "".join(out)


def substitution(text: str, key: str, decrypt: bool = False) -> str:
    """``key`` is a permutation of the alphabet: A -> key[0], B -> key[1], ..."""
    table = str.maketrans(key, ALPHABET) if decrypt else str.maketrans(ALPHABET, key)
    return text.translate(table)


def rail_fence_order(length: int, rails: int) -> list[int]:
    """Plaintext positions in the order the rail fence reads them (rail by rail, zigzag)."""
    if rails < 2:
        return list(range(length))
    cycle = 2 * rails - 2
    rail_of = [min(i % cycle, cycle - i % cycle) for i in range(length)]
    return sorted(range(length), key=lambda i: (rail_of[i], i))


def rail_fence(text: str, rails: int, decrypt: bool = False) -> str:
    order = rail_fence_order(len(text), rails)
    if decrypt:
        out = [""] * len(text)
        for c, pos in zip(text, order):
            out[pos] = c
        return "".join(out)
    return "".join(text[i] for i in order)


def playfair_square(key: str) -> str:
    """The 25-letter square (J merged into I): key letters first, then the rest of the alphabet."""
    seen: list[str] = []
    for c in key.replace("J", "I") + ALPHABET.replace("J", ""):
        if c not in seen:
            seen.append(c)
    return "".join(seen)


def playfair_ready(text: str) -> bool:
    """True when ``text`` needs no filler letters: even length, no J, no doubled digraph."""
    return len(text) % 2 == 0 and "J" not in text and all(text[i] != text[i + 1] for i in range(0, len(text), 2))


def playfair(text: str, key: str, decrypt: bool = False) -> str:
    """Digraph cipher on a 5x5 square; ``text`` must satisfy :func:`playfair_ready`."""
    square = playfair_square(key)
    pos = {c: divmod(i, 5) for i, c in enumerate(square)}
    step = -1 if decrypt else 1
    out = []
    for i in range(0, len(text), 2):
        (r1, c1), (r2, c2) = pos[text[i]], pos[text[i + 1]]
        if r1 == r2:
            out += [square[r1 * 5 + (c1 + step) % 5], square[r2 * 5 + (c2 + step) % 5]]
        elif c1 == c2:
            out += [square[((r1 + step) % 5) * 5 + c1], square[((r2 + step) % 5) * 5 + c2]]
        else:
            out += [square[r1 * 5 + c2], square[r2 * 5 + c1]]
    return "".join(out)


def hill_inverse(key: list[int]) -> list[int] | None:
    """Inverse of the 2x2 matrix [[a, b], [c, d]] (flattened) mod 26, or None if singular."""
    a, b, c, d = key
    det = (a * d - b * c) % 26
    try:
        det_inv = pow(det, -1, 26)
    except ValueError:
        return None
    return [(d * det_inv) % 26, (-b * det_inv) % 26, (-c * det_inv) % 26, (a * det_inv) % 26]


def hill(text: str, key: list[int], decrypt: bool = False) -> str:
    """2x2 Hill cipher: each letter pair (x, y) as a column vector becomes K (x, y)^T mod 26.
    ``text`` must have even length."""
    a, b, c, d = hill_inverse(key) if decrypt else key
    out = []
    for i in range(0, len(text), 2):
        x, y = _idx(text[i]), _idx(text[i + 1])
        out += [_chr(a * x + b * y), _chr(c * x + d * y)]
    return "".join(out)


def letters_only(text: str) -> str:
    return "".join(c for c in text.upper() if c.isalpha())


#: Ciphers whose ciphertext has no spaces (they act on the letter sequence).
LETTER_STREAM_CIPHERS = ("rail_fence", "playfair", "hill")


def encrypt(cipher: str, plaintext: str, key) -> str:
    """Encrypt ``plaintext`` (upper-case words separated by spaces) under ``cipher``/``key``."""
    if cipher in LETTER_STREAM_CIPHERS:
        plaintext = letters_only(plaintext)
    return {
        "caesar": lambda: caesar(plaintext, key),
        "atbash": lambda: atbash(plaintext),
        "affine": lambda: affine(plaintext, *key),
        "vigenere": lambda: vigenere(plaintext, key),
        "autokey": lambda: autokey(plaintext, key),
        "substitution": lambda: substitution(plaintext, key),
        "rail_fence": lambda: rail_fence(plaintext, key),
        "playfair": lambda: playfair(plaintext, key),
        "hill": lambda: hill(plaintext, key),
    }[cipher]()


def decrypt(cipher: str, ciphertext: str, key) -> str:
    return {
        "caesar": lambda: caesar(ciphertext, key, decrypt=True),
        "atbash": lambda: atbash(ciphertext),
        "affine": lambda: affine(ciphertext, *key, decrypt=True),
        "vigenere": lambda: vigenere(ciphertext, key, decrypt=True),
        "autokey": lambda: autokey(ciphertext, key, decrypt=True),
        "substitution": lambda: substitution(ciphertext, key, decrypt=True),
        "rail_fence": lambda: rail_fence(ciphertext, key, decrypt=True),
        "playfair": lambda: playfair(ciphertext, key, decrypt=True),
        "hill": lambda: hill(ciphertext, key, decrypt=True),
    }[cipher]()


CIPHER_RULES = {
    "caesar": "Caesar cipher: each letter is shifted forward in the alphabet by the key (wrapping Z to A); spaces are kept.",
    "atbash": "Atbash cipher: each letter is replaced by its mirror in the alphabet (A<->Z, B<->Y, ...); there is no key; spaces are kept.",
    "affine": "Affine cipher with key (a, b): letter x (A=0 ... Z=25) becomes (a*x + b) mod 26; spaces are kept.",
    "vigenere": "Vigenere cipher: the i-th letter (counting letters only) is shifted forward by the i-th key letter (A=0 ... Z=25), repeating the key; spaces are kept.",
    "autokey": "Autokey cipher: the key stream is the key followed by the plaintext letters; the i-th letter (counting letters only) is shifted forward by the i-th key-stream letter (A=0 ... Z=25); spaces are kept.",
    "substitution": "Substitution cipher: the key lists the ciphertext letters for plaintext A, B, C, ..., Z in order; spaces are kept.",
    "rail_fence": "Rail fence cipher: the plaintext letters (spaces removed) are written in a zigzag over a number of rails (the key), then read off rail by rail, top rail first.",
    "playfair": "Playfair cipher: a 5x5 square (I and J share a cell) is filled row by row with the key's letters (repeats dropped) then the rest of the alphabet; the plaintext letters (spaces removed) are split into pairs; a pair in the same row becomes the letters to the right of each, in the same column the letters below each (wrapping around), otherwise the letters in the same row at the other letter's column. No filler letters were needed.",
    "hill": "Hill cipher with a 2x2 key matrix K = [[a, b], [c, d]] (A=0 ... Z=25): the plaintext letters (spaces removed) are split into pairs (x, y), and each pair becomes (a*x + b*y, c*x + d*y) mod 26.",
}

# ---------------------------------------------------------------------------------------------
# Keys and plaintexts.


def random_key(cipher: str, rng: random.Random):
    if cipher == "caesar":
        return rng.randint(1, 25)
    if cipher == "atbash":
        return None
    if cipher == "affine":
        return [rng.choice(AFFINE_MULTIPLIERS[1:]), rng.randint(0, 25)]
    if cipher in ("vigenere", "autokey"):
        return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(3, 6)))
    if cipher == "substitution":
        letters = list(ALPHABET)
        rng.shuffle(letters)
        return "".join(letters)
    if cipher == "rail_fence":
        return rng.randint(2, 5)
    if cipher == "playfair":
        return rng.choice(WORDS) + rng.choice(WORDS)
    if cipher == "hill":
        while True:
            key = [rng.randrange(26) for _ in range(4)]
            if hill_inverse(key) is not None:
                return key
    raise ValueError(f"unknown cipher {cipher!r}")


def describe_key(cipher: str, key) -> str:
    if cipher == "affine":
        return f"(a, b) = ({key[0]}, {key[1]})"
    if cipher == "hill":
        return f"K = [[{key[0]}, {key[1]}], [{key[2]}, {key[3]}]]"
    if cipher == "rail_fence":
        return f"{key} rails"
    return str(key)


def random_plaintext(cipher: str, rng: random.Random, min_words: int, max_words: int) -> str:
    """Words from :data:`WORDS`; resampled until the cipher needs no padding (playfair: no J,
    no doubled pair, even length; hill: even length)."""
    while True:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        letters = letters_only(text)
        if cipher == "playfair" and not playfair_ready(letters):
            continue
        if cipher == "hill" and len(letters) % 2:
            continue
        return text


def normalise(text: str) -> str:
    """Upper case with all whitespace removed: the form answers are compared in."""
    return "".join(text.split()).upper()


def plaintext_matches(answer: str, metadata: dict) -> bool:
    if not isinstance(answer, str) or len(answer) > MAX_PLAINTEXT_CHARS:
        return False
    return normalise(answer) == normalise(metadata.get("plaintext", "\0"))


def _plaintext_corruptions(puzzle: Puzzle, rng: random.Random) -> list[str]:
    plain = letters_only(puzzle.metadata["plaintext"])
    wrong_letter = list(plain)
    i = rng.randrange(len(plain))
    wrong_letter[i] = _chr(_idx(plain[i]) + rng.randint(1, 25))
    swapped = plain[1] + plain[0] + plain[2:] if plain[0] != plain[1] else plain[:-1] + _chr(_idx(plain[-1]) + 1)
    return [
        plain[:-1],  # truncated
        "".join(wrong_letter),  # one wrong letter
        swapped,  # two letters swapped
        puzzle.metadata["ciphertext"],  # the ciphertext itself
        "",
    ]


# Cipher families by tier: a difficulty's preset includes every cipher up to its tier.
KKA_TIERS = (("caesar", "atbash", "affine", "rail_fence"), ("vigenere", "autokey", "substitution"), ("playfair", "hill"))
KPA_TIERS = (("caesar", "rail_fence"), ("affine", "vigenere"), ("autokey", "substitution", "hill"))


def _ciphers_up_to(tiers, tier: int) -> list[str]:
    if not 1 <= tier <= len(tiers):
        raise ValueError(f"cipher_tier must be 1..{len(tiers)}, got {tier}")
    return [c for group in tiers[:tier] for c in group]


@register
class CryptoKKA(Task):
    """Decrypt a ciphertext given the cipher and its key (decryption is a function: the answer is
    unique by construction)."""

    name = "crypto_KKA"
    category = "Crypto"
    presets = {
        "easy": {"cipher_tier": 1, "min_words": 2, "max_words": 3},
        "medium": {"cipher_tier": 2, "min_words": 3, "max_words": 5},
        "hard": {"cipher_tier": 3, "min_words": 5, "max_words": 8},
    }
    test_knobs = [{"cipher_tier": 3, "min_words": 1, "max_words": 1}, {"cipher_tier": 1, "min_words": 10, "max_words": 12}]

    def build(self, rng, cipher_tier, min_words, max_words):
        cipher = rng.choice(_ciphers_up_to(KKA_TIERS, cipher_tier))
        key = random_key(cipher, rng)
        plaintext = random_plaintext(cipher, rng, min_words, max_words)
        ciphertext = encrypt(cipher, plaintext, key)
        key_line = "" if cipher == "atbash" else f"Key: {describe_key(cipher, key)}\n"
        question = (
            f"Decrypt the following ciphertext.\n\n{CIPHER_RULES[cipher]}\n\n"
            f"Cipher: {cipher}\n{key_line}Ciphertext: {ciphertext}\n\n"
            "The plaintext is English words in upper case. Answer with the plaintext only "
            "(spaces between words are optional, letter case is ignored)."
        )
        metadata = {"cipher": cipher, "key": key, "ciphertext": ciphertext, "plaintext": plaintext}
        return question, plaintext, metadata

    def verify(self, answer, metadata):
        return plaintext_matches(answer, metadata)

    def corruptions(self, puzzle, rng):
        return _plaintext_corruptions(puzzle, rng)


# ---------------------------------------------------------------------------------------------
# Known-plaintext attack: which keys are consistent with a known pair.


def consistent_keys(cipher: str, plain: str, cipher_text: str, key_length: int | None = None) -> list:
    """Every key of ``cipher`` that encrypts ``plain`` to ``cipher_text``, or None when the
    pair leaves some key part free (the caller then rejects the instance).

    Small key spaces are searched exhaustively; vigenere/autokey/substitution/hill keys are
    solved for position by position (with the key length given), which is exact too.
    """
    if cipher == "caesar":
        return [k for k in range(26) if encrypt(cipher, plain, k) == cipher_text]
    if cipher == "affine":
        return [[a, b] for a in AFFINE_MULTIPLIERS for b in range(26) if encrypt(cipher, plain, [a, b]) == cipher_text]
    if cipher == "rail_fence":
        # rails beyond the text length all act as the identity; searching past the longest text
        # any preset uses keeps the search exhaustive for the second ciphertext too
        return [r for r in range(2, MAX_RAILS_SEARCHED + 1) if encrypt(cipher, plain, r) == cipher_text]
    p, c = letters_only(plain), letters_only(cipher_text)
    if cipher in ("vigenere", "autokey"):
        if len(p) < key_length:
            return None
        key = "".join(_chr(_idx(c[i]) - _idx(p[i])) for i in range(key_length))
        return [key] if encrypt(cipher, plain, key) == cipher_text else []
    if cipher == "substitution":
        mapping: dict[str, str] = {}
        for a, b in zip(p, c):
            if mapping.setdefault(a, b) != b:
                return []
        if len(set(mapping.values())) != len(mapping):
            return []
        return [mapping]  # a partial key: only these letters are pinned down
    if cipher == "hill":
        # K P = C for the 2x2 matrix P of two plaintext pairs as columns: K = C P^-1 when P is
        # invertible mod 26; then every consistent key equals it.
        starts = range(0, len(p) - 1, 2)
        for i in starts:
            for j in starts:
                pm = [_idx(p[i]), _idx(p[j]), _idx(p[i + 1]), _idx(p[j + 1])]  # columns = pairs
                pinv = hill_inverse(pm)
                if pinv is None:
                    continue
                cm = [_idx(c[i]), _idx(c[j]), _idx(c[i + 1]), _idx(c[j + 1])]
                key = [
                    (cm[0] * pinv[0] + cm[1] * pinv[2]) % 26,
                    (cm[0] * pinv[1] + cm[1] * pinv[3]) % 26,
                    (cm[2] * pinv[0] + cm[3] * pinv[2]) % 26,
                    (cm[2] * pinv[1] + cm[3] * pinv[3]) % 26,
                ]
                return [key] if hill_inverse(key) is not None and encrypt(cipher, plain, key) == cipher_text else []
        return None
    raise ValueError(f"cipher {cipher!r} has no known-plaintext solver")


def decryptions_under(cipher: str, keys: list, ciphertext: str) -> set[str] | None:
    """Every plaintext the consistent ``keys`` give for ``ciphertext`` (None: not determined)."""
    if cipher == "substitution":
        inverse = {b: a for a, b in keys[0].items()}
        if any(ch.isalpha() and ch not in inverse for ch in ciphertext):
            return None
        return {"".join(inverse.get(ch, ch) for ch in ciphertext)}
    return {decrypt(cipher, ciphertext, k) for k in keys}


def _covered_plaintext(known: str, rng: random.Random, min_words: int, max_words: int) -> str | None:
    """Words using only letters of ``known`` (so a substitution pair pins down their decryption),
    or None when too few such words exist."""
    letters = set(letters_only(known))
    usable = [w for w in WORDS if set(w) <= letters]
    if len(usable) < 3:
        return None
    return " ".join(rng.choice(usable) for _ in range(rng.randint(min_words, max_words)))


@register
class CryptoKPA(Task):
    """Known-plaintext attack: recover the key of a stated cipher family from one
    plaintext/ciphertext pair and decrypt a second ciphertext.

    Unique by construction: at generation every key consistent with the pair is enumerated or
    solved for (:func:`consistent_keys`), and the instance is kept only when all of them decrypt
    the second ciphertext to the same plaintext.
    """

    name = "crypto_KPA"
    category = "Crypto"
    presets = {
        "easy": {"cipher_tier": 1, "min_words": 2, "max_words": 3},
        "medium": {"cipher_tier": 2, "min_words": 3, "max_words": 4},
        "hard": {"cipher_tier": 3, "min_words": 4, "max_words": 6},
    }
    test_knobs = [{"cipher_tier": 3, "min_words": 2, "max_words": 2}, {"cipher_tier": 1, "min_words": 8, "max_words": 9}]

    def build(self, rng, cipher_tier, min_words, max_words):
        cipher = rng.choice(_ciphers_up_to(KPA_TIERS, cipher_tier))
        for _ in range(1000):
            key = random_key(cipher, rng)
            known = random_plaintext(cipher, rng, min_words, max_words)
            if cipher == "substitution":
                secret = _covered_plaintext(known, rng, min_words, max_words)
                if secret is None:
                    continue
            else:
                secret = random_plaintext(cipher, rng, min_words, max_words)
            known_ct, secret_ct = encrypt(cipher, known, key), encrypt(cipher, secret, key)
            key_length = len(key) if cipher in ("vigenere", "autokey") else None
            keys = consistent_keys(cipher, known, known_ct, key_length)
            if not keys:
                continue
            plaintexts = decryptions_under(cipher, keys, secret_ct)
            if plaintexts is not None and len(plaintexts) == 1 and letters_only(secret) != letters_only(known):
                break
        else:  # pragma: no cover - every family finds a determined pair within a few tries
            raise RuntimeError(f"crypto_KPA: no identifiable {cipher} instance found")
        family = CIPHER_RULES[cipher]
        if key_length:
            family += f" The key has {key_length} letters."
        question = (
            "Known-plaintext attack. A message was encrypted with a cipher whose family is known "
            f"but whose key is not.\n\n{family}\n\n"
            f"Known plaintext: {known}\nIts ciphertext: {known_ct}\n\n"
            f"Using the same key, decrypt this second ciphertext: {secret_ct}\n\n"
            "The plaintext is English words in upper case. Answer with the plaintext only "
            "(spaces between words are optional, letter case is ignored)."
        )
        metadata = {
            "cipher": cipher,
            "key": key,
            "known_plaintext": known,
            "known_ciphertext": known_ct,
            "ciphertext": secret_ct,
            "plaintext": secret,
        }
        return question, secret, metadata

    def verify(self, answer, metadata):
        return plaintext_matches(answer, metadata)

    def corruptions(self, puzzle, rng):
        return _plaintext_corruptions(puzzle, rng) + [puzzle.metadata["known_plaintext"]]
