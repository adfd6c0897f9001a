"""DNS-driven identity, in every mode: a booting machine's address is looked up in reverse DNS;
the name that comes back becomes its hostname, the name's TXT records (RFC 1464 style,
``dragonfly:tags=a,b`` and ``dragonfly:role=x``) and the operator's hostname rules give its
tags and role. Each value is recorded with where it came from.

Kept free of imports here: ``dragonfly.config`` validates rules with ``dnsid.rules`` alone."""
