"""The demo: the real application over a simulated fleet, in memory, on loopback only.
``dragonfly.compose.demo_context`` assembles it from the simulator here."""
