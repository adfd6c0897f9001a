"""Read-only TFTP for the boot edge: pure packet codec, asyncio listener, worker loops."""

from dragonfly.tftp.files import Resolver
from dragonfly.tftp.server import OnTransfer, TftpServer, TftpStats
from dragonfly.tftp.transfer import TransferRecord

__all__ = ["OnTransfer", "Resolver", "TftpServer", "TftpStats", "TransferRecord"]
