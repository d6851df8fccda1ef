"""hookway-governance: virtual keys, customers -> teams -> keys, budgets, rate limits, and the
Bifrost-compatible ``/api/governance`` management API. See README.md."""

from .engine import Engine
from .model import KEY_PREFIX, hash_value, new_key_value
from .plugin import GovernancePlugin
from .pricing import DEFAULT_PRICES, Price, Pricing

__all__ = ["GovernancePlugin", "Engine", "KEY_PREFIX", "hash_value", "new_key_value", "DEFAULT_PRICES",
           "Price", "Pricing"]
