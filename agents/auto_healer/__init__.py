"""auto-healer: the self-healing agent of the Aura Hive.

It takes injuries from the NATS bloodstream (`aura.hive.injury`), matches them against
declarative YAML playbooks and repairs a git checkout, or pages a human when it must not.
"""

__version__ = "0.1.0"
