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
