"""Configuration: the TOML file read into frozen, typed settings; errors name the key."""

from postroom.config.load import ConfigError, load_config, parse_config
from postroom.config.schema import Config

__all__ = ["Config", "ConfigError", "load_config", "parse_config"]
