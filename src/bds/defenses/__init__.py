"""Defenses against harmful fine-tuning, as plug-ins: a registry (registry.py), the hooks
the trainer calls (base.py), and one module per defense (BDS, Mix and SFT among them).

A new defense is one file here (its settings dataclass and its hooks), one line in
registry.DEFENSES and one test (tests/test_defense_<name>.py).
"""
