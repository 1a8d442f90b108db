"""Numbers read as English words, for the text front end.

`int_to_words`, `ordinal_to_words`, `year_to_words` and `digits_to_words` read one number;
`expand_numbers` writes out every number in a text: currency, percentages, ordinals, times,
version numbers, years, negative numbers, decimals and integers (models/frontend/text.py
`normalize` calls it; SSML `say-as` reads with the single-number functions).

Pure functions, no I/O.
"""

from __future__ import annotations

import re

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _below_thousand(n: int) -> list[str]:
    assert 0 <= n < 1000
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
    if n >= 20:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    elif n or not words:
        words.append(_ONES[n])
    return words


def int_to_words(n: int) -> str:
    """Cardinal reading: 1234 -> "one thousand two hundred thirty four".

    Numbers of a quadrillion or more are read digit by digit (nobody says them as words).
    """
    if n < 0:
        return "minus " + int_to_words(-n)
    if n >= 10**15:
        return digits_to_words(str(n))
    if n < 1000:
        return " ".join(_below_thousand(n))
    words: list[str] = []
    for value, name in _SCALES:
        if n >= value:
            words += _below_thousand(n // value) + [name]
            n %= value
    if n:
        words += _below_thousand(n)
    return " ".join(words)


def digits_to_words(digits: str) -> str:
    """ "0042" -> "zero zero four two"."""
    return " ".join(_DIGIT_WORDS[int(d)] for d in digits)


def year_to_words(year: int) -> str:
    """1984 -> "nineteen eighty four", 1905 -> "nineteen oh five", 2008 -> "two thousand eight"."""
    assert 1000 <= year <= 9999
    hi, lo = divmod(year, 100)
    if 2000 <= year <= 2009 or lo == 0 and hi % 10 == 0:
        return int_to_words(year)
    if lo == 0:
        return int_to_words(hi) + " hundred"
    if lo < 10:
        return int_to_words(hi) + " oh " + _ONES[lo]
    return int_to_words(hi) + " " + int_to_words(lo)


_ORDINAL_IRREGULAR = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def ordinal_to_words(n: int) -> str:
    """21 -> "twenty first"."""
    words = int_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_IRREGULAR:
        words[-1] = _ORDINAL_IRREGULAR[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _number_words(int_part: str, frac_part: str | None) -> str:
    words = int_to_words(int(int_part.replace(",", "")))
    if frac_part:
        words += " point " + digits_to_words(frac_part)
    return words


_CURRENCY = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
}
# Group separators must come in threes ("1,234,567"); otherwise "1,2" is a list, not a number.
_NUM = r"([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]+))?"
_CURRENCY_RE = re.compile(r"([$\u00a3\u20ac])\s?" + _NUM + r"(?:\s?(million|billion|trillion))?\b")
_PERCENT_RE = re.compile(_NUM + r"\s?%")
_ORDINAL_RE = re.compile(r"\b(\d+)(st|nd|rd|th)\b", re.IGNORECASE)
_YEAR_RE = re.compile(r"(?<![\d.,$])\b(1[1-9]\d\d|20\d\d)(s?)\b(?![.,]\d)")
_DOTTED_RE = re.compile(r"\b\d+(?:\.\d+){2,}\b")  # version numbers, IP addresses
_NEG_RE = re.compile(r"(?<![\w.])-(?=\d)")
_PLAIN_NUM_RE = re.compile(r"(?<![\d.])" + _NUM + r"(?![\d])")
_TIME_RE = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")


def _currency(m: re.Match[str]) -> str:
    one, many, sub_one, sub_many = _CURRENCY[m.group(1)]
    whole = int(m.group(2).replace(",", ""))
    frac = m.group(3)
    scale = m.group(4)
    if scale:  # "$3.5 million" -> "three point five million dollars"
        return f"{_number_words(m.group(2), frac)} {scale} {many}"
    words = f"{int_to_words(whole)} {one if whole == 1 else many}"
    if frac:
        cents = int((frac + "0")[:2])
        if cents:
            words += f" and {int_to_words(cents)} {sub_one if cents == 1 else sub_many}"
    return words


def _year(m: re.Match[str]) -> str:
    words = year_to_words(int(m.group(1)))
    if m.group(2):  # "1990s" -> "nineteen nineties"
        last = words.split()[-1]
        plural = last[:-1] + "ies" if last.endswith("y") else last + "s"
        words = " ".join(words.split()[:-1] + [plural])
    return words


def _time(m: re.Match[str]) -> str:
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes == 0:
        return f"{int_to_words(hours)} o'clock" if hours <= 12 else f"{int_to_words(hours)} hundred"
    if minutes < 10:
        return f"{int_to_words(hours)} oh {_ONES[minutes]}"
    return f"{int_to_words(hours)} {int_to_words(minutes)}"


def _dotted(m: re.Match[str]) -> str:
    return " point ".join(int_to_words(int(part)) for part in m.group(0).split("."))


def expand_currency(text: str) -> str:
    """Write out amounts of money: "$12.50" -> "twelve dollars and fifty cents"."""
    return _CURRENCY_RE.sub(_currency, text)


def expand_numbers(text: str) -> str:
    """Write out currency, percentages, ordinals, times, years, decimals and integers."""
    text = _CURRENCY_RE.sub(_currency, text)
    text = _PERCENT_RE.sub(lambda m: _number_words(m.group(1), m.group(2)) + " percent", text)
    text = _ORDINAL_RE.sub(lambda m: ordinal_to_words(int(m.group(1))), text)
    text = _TIME_RE.sub(_time, text)
    text = _DOTTED_RE.sub(_dotted, text)
    text = _YEAR_RE.sub(_year, text)
    text = _NEG_RE.sub("minus ", text)
    text = _PLAIN_NUM_RE.sub(lambda m: _number_words(m.group(1), m.group(2)), text)
    return text
