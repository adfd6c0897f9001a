"""The discovery agent (shell, runs on the booting machine) and its server side.

``agent.sh``, ``init.sh`` and ``udhcpc.script`` are package data shipped inside the agent's
initramfs overlay (``initramfs``); ``checkin`` validates reports and moves machines through the
lifecycle; ``routes`` is the HTTP surface (check-in, heartbeat, iPXE script, kernel and initrd).
"""
