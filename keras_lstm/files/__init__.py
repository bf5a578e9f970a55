"""Files that survive kills: `atomic` (files and folders that appear whole or
not at all) and `lock` (one process at a time per folder).
"""
