"""The pure lifecycle domain: stage configuration, rules, commands and the one write path."""

from .commands import ChangeResult, ChangeStage, CustomerState, Source, Transition
from .config import DEFAULT_CONFIG, ConfigProposal, StageConfig, build_config, config_from_json
from .errors import Code, DomainError, Reason
from .inputs import MAX_IDEMPOTENCY_KEY, MAX_TEXT, FieldNames, check_change, check_command
from .service import (
    MAX_BULK,
    change_stages,
    check_stage_rules,
    configure_stages,
    start_lifecycle,
    transition_id,
    utcnow,
)

__all__ = [
    "DEFAULT_CONFIG",
    "MAX_BULK",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_TEXT",
    "ChangeResult",
    "ChangeStage",
    "Code",
    "ConfigProposal",
    "CustomerState",
    "DomainError",
    "FieldNames",
    "Reason",
    "Source",
    "StageConfig",
    "Transition",
    "build_config",
    "change_stages",
    "check_change",
    "check_command",
    "check_stage_rules",
    "config_from_json",
    "configure_stages",
    "start_lifecycle",
    "transition_id",
    "utcnow",
]
