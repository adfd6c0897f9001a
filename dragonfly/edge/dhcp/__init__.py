"""DHCP for the boot edge: a pure codec, the proxyDHCP/full-mode responder, and the service
that binds it to UDP 67 and 4011 on the boot interface."""

from dragonfly.edge.dhcp.codec import DecodeResult, MessageType, Packet, decode, encode
from dragonfly.edge.dhcp.leases import FullModeSettings, Lease, LeasePool
from dragonfly.edge.dhcp.responder import DhcpCounters, ReplyTargets, Responder
from dragonfly.edge.dhcp.server import DhcpConflict, DhcpPorts, DhcpService

__all__ = ["DecodeResult", "DhcpConflict", "DhcpCounters", "DhcpPorts", "DhcpService",
           "FullModeSettings", "Lease", "LeasePool", "MessageType", "Packet", "ReplyTargets",
           "Responder", "decode", "encode"]
