"""The boot edge: proxyDHCP or full DHCP, TFTP, the service that runs them from the settings
(and rebuilds them when a boot setting changes), and the boot HTTP routes (``/boot/*``,
``/api/boot``)."""
