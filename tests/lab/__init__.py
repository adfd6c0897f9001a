"""Lab tests against real peers (QEMU, dnsmasq) in network namespaces; see conftest.py."""
