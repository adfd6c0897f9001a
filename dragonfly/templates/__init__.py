"""OS templates: the built-in catalog of vendor cloud images, custom templates (API, files in
the state dir), and the cloud-init NoCloud seed a deployment writes.

Modules: ``model`` (OsTemplate, validation), ``catalog`` (the built-ins and where each fact
comes from), ``registry`` (TemplateCatalog:
built-in + file + stored templates), ``render`` (sandboxed jinja2), ``network`` (network
settings -> network-config v2), ``seed`` (meta-data, user-data, network-config), ``routes``
(the JSON API). This ``__init__`` imports none of them, so importing the model stays cheap.
"""
