"""Read-only TFTP for the boot edge: pure packet codec, asyncio listener, worker loops."""

from dragonfly.edge.tftp.files import Resolver
from dragonfly.edge.tftp.server import OnTransfer, TftpServer, TftpStats
from dragonfly.edge.tftp.transfer import TransferRecord

__all__ = ["OnTransfer", "Resolver", "TftpServer", "TftpStats", "TransferRecord"]
