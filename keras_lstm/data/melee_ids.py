"""Melee's external ids (the game-start block of a replay, which training
reads) of characters and stages, by name."""

from __future__ import annotations

# By libmelee's internal-id names. Nana has no external id: she is Popo's.
EXTERNAL_CHARACTER_IDS = {
    "CPTFALCON": 0, "DK": 1, "FOX": 2, "GAMEANDWATCH": 3, "KIRBY": 4, "BOWSER": 5, "LINK": 6, "LUIGI": 7,
    "MARIO": 8, "MARTH": 9, "MEWTWO": 10, "NESS": 11, "PEACH": 12, "PIKACHU": 13, "POPO": 14, "NANA": 14,
    "JIGGLYPUFF": 15, "SAMUS": 16, "YOSHI": 17, "ZELDA": 18, "SHEIK": 19, "FALCO": 20, "YLINK": 21, "DOC": 22,
    "ROY": 23, "PICHU": 24, "GANONDORF": 25, "WIREFRAME_MALE": 27, "WIREFRAME_FEMALE": 28, "GIGA_BOWSER": 29,
    "SANDBAG": 31,
}  # fmt: skip

# Internal ids (what each frame of a replay, libmelee and UMI carry), by the same names.
INTERNAL_CHARACTER_IDS = {
    "MARIO": 0, "FOX": 1, "CPTFALCON": 2, "DK": 3, "KIRBY": 4, "BOWSER": 5, "LINK": 6, "SHEIK": 7, "NESS": 8,
    "PEACH": 9, "POPO": 10, "NANA": 11, "PIKACHU": 12, "SAMUS": 13, "YOSHI": 14, "JIGGLYPUFF": 15, "MEWTWO": 16,
    "LUIGI": 17, "MARTH": 18, "ZELDA": 19, "YLINK": 20, "DOC": 21, "FALCO": 22, "PICHU": 23, "GAMEANDWATCH": 24,
    "GANONDORF": 25, "ROY": 26,
}  # fmt: skip
EXTERNAL_OF_INTERNAL = {internal: EXTERNAL_CHARACTER_IDS[name] for name, internal in INTERNAL_CHARACTER_IDS.items()}

# Other names players use for the same characters.
CHARACTER_ALIASES = {
    "FALCON": 0, "CAPTAINFALCON": 0, "DONKEYKONG": 1, "GNW": 3, "GAMEWATCH": 3, "ICS": 14, "ICECLIMBERS": 14,
    "ICECLIMBER": 14, "PUFF": 15, "JIGGS": 15, "YOUNGLINK": 21, "DRMARIO": 22, "DOCTORMARIO": 22, "GANON": 25,
}  # fmt: skip

# The tournament stages, by name and common short name.
STAGE_IDS = {
    "FOUNTAIN_OF_DREAMS": 2, "FOD": 2, "POKEMON_STADIUM": 3, "PS": 3, "STADIUM": 3, "YOSHIS_STORY": 8, "YS": 8,
    "DREAMLAND": 28, "DL": 28, "BATTLEFIELD": 31, "BF": 31, "FINAL_DESTINATION": 32, "FD": 32,
}  # fmt: skip

# Every id the game-start block can hold, so that an id no game has is
# refused like an unknown name. Characters: the external ids 0x00-0x20 (the
# 26 playable characters, then Master Hand, the wireframes, Giga Bowser,
# Crazy Hand, Sandbag and Popo). Stages: the versus stages, 2 (Fountain of
# Dreams) to 32 (Final Destination); 21 (Akaneia) was cut from the game.
CHARACTER_ID_RANGE = range(0x21)
VERSUS_STAGE_IDS = frozenset(range(2, 33)) - {21}


def character_name(external_id: int) -> str:
    """A character's name (lower case) from its external id, as reports show it."""
    for name, value in EXTERNAL_CHARACTER_IDS.items():
        if value == external_id and name != "NANA":
            return name.lower()
    return f"character {external_id}"
