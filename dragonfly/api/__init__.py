"""The JSON API's endpoint modules: machines (with delete and node locks), tags, workflows,
templates, and the meta routes (version, OpenAPI document, event stream). ``dragonfly.app``
collects their routers with the agent's and the boot edge's."""
