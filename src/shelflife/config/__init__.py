"""Configuration: typed models and the loader that builds them."""

from shelflife.config.load import embedded_default, load_config, parse_config
from shelflife.config.model import (
    CatalogConfig,
    Config,
    DatabaseConfig,
    HealthConfig,
    ReferenceConfig,
    RuleConfig,
    ScheduleConfig,
    TierConfig,
)

__all__ = [
    "CatalogConfig",
    "Config",
    "DatabaseConfig",
    "HealthConfig",
    "ReferenceConfig",
    "RuleConfig",
    "ScheduleConfig",
    "TierConfig",
    "embedded_default",
    "load_config",
    "parse_config",
]
