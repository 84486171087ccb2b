"""The pure lifecycle domain: stage configuration, rules, commands and the one write path."""

from .commands import ChangeResult, ChangeStage, CustomerState, Source, Transition
from .config import DEFAULT_CONFIG, ConfigProposal, StageConfig, build_config, config_from_json
from .errors import Code, DomainError, Reason
from .service import (
    MAX_BULK,
    change_stage,
    change_stages,
    check_stage_rules,
    configure_stages,
    start_lifecycle,
)

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_BULK",
    "ChangeResult",
    "ChangeStage",
    "Code",
    "ConfigProposal",
    "CustomerState",
    "DomainError",
    "Reason",
    "Source",
    "StageConfig",
    "Transition",
    "build_config",
    "change_stage",
    "change_stages",
    "check_stage_rules",
    "config_from_json",
    "configure_stages",
    "start_lifecycle",
]
