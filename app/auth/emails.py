"""Email addresses as account keys: one spelling per address, and no invisible characters.

Fullwidth letters (U+FF41 for `a`), decomposed accents (`e` + U+0301) and letters that
differ only in case must not make two accounts that look the same. An address is compared in its
NFKC case-folded form (Unicode's NFKC_Casefold: NFKC, full case folding, NFKC again), which is
also the form stored. Characters that render as nothing (zero-width spaces and joiners, bidi
controls, variation selectors, soft hyphens, Hangul fillers: Unicode's Default_Ignorable_Code_Point
set) and control, format, private-use, unassigned and separator characters are refused rather
than dropped: silently removing them would let `ada\\u200b@example.com` log in as `ada@`.
"""

from __future__ import annotations

import re
import unicodedata

from app.errors import BadUserInput

MAX_EMAIL_LENGTH = 254
_SHAPE = re.compile(r"^[^@]+@[^@]+\.[^@]+$")
# Default_Ignorable_Code_Point (Unicode's DerivedCoreProperties.txt), as ranges.
_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# Control, format, surrogate, private use, unassigned; space, line and paragraph separators.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})
_INVALID = "Email is not a valid address"


def _invisible(character: str) -> bool:
    point = ord(character)
    if any(low <= point <= high for low, high in _IGNORABLE):
        return True
    return unicodedata.category(character) in _REFUSED_CATEGORIES


def canonical_email(email: str) -> str | None:
    """`email` in its stored form, or None when it is not an acceptable address."""
    stripped = email.strip()
    if len(stripped) > 4 * MAX_EMAIL_LENGTH or any(map(_invisible, stripped)):
        return None  # (normalising can lengthen text; absurd input is not worth normalising)
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", stripped).casefold())
    if not folded or len(folded) > MAX_EMAIL_LENGTH or any(map(_invisible, folded)):
        return None
    return folded if _SHAPE.match(folded) else None


def normalize_email(email: str) -> str:
    """`email` in its stored form; BadUserInput when it is not an acceptable address."""
    canonical = canonical_email(email)
    if canonical is None:
        raise BadUserInput(_INVALID)
    return canonical
