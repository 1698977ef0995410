"""The base config of every file here: ``trainer.base``'s ConfigDict, derived from the typed
sections of ``trainer.config`` (the one place a default lives), and its shortcuts."""

from trainer.base import (  # noqa: F401 -- the names the config files use
    SECTIONS,
    SHORTCUTS,
    apply_shortcuts,
    get_base_config,
    get_config,
    override,
    set_fields,
)
