"""Boot methods: which loader or URL each kind of booting client gets (shared by DHCP,
TFTP and HTTP), and the per-MAC memory that keeps iPXE out of boot loops."""

from dragonfly.boot.memory import BootMemory
from dragonfly.boot.registry import (
    DEFAULT_METHODS,
    BootDecision,
    BootEndpoints,
    BootMethod,
    BootRegistry,
    ClientFacts,
    arch_name,
)

__all__ = ["DEFAULT_METHODS", "BootDecision", "BootEndpoints", "BootMemory", "BootMethod",
           "BootRegistry", "ClientFacts", "arch_name"]
