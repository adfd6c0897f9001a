"""Access control: accounts, roles, sessions, MFA, tokens, allowlist, safety mode, node locks,
audit. ``plugin.install_auth`` plugs it into the application; everything is enforced by one
middleware (``dragonfly.auth.middleware``)."""
