"""Tinkerbell mode's deployment backend: Dragonfly's machines, templates and deployments as
Tinkerbell ``Hardware``, ``Template`` and ``Workflow`` objects on k3s.

- ``schema``: Tinkerbell's CRDs (shipped in ``crds/``) and the check every object passes first.
- ``translate``: machines, templates and deployments as those objects (pure; the demo uses it).
- ``status``: a Workflow's status as Dragonfly's stages, progress and failure reason.
- ``kube``: the async Kubernetes client (lightkube) and readable cluster errors.
- ``backend``: the ``WorkflowRunner`` of Tinkerbell mode: sends, watches, reconciles.
- ``routes``: the cluster state for the panel, the seed and phone-home of Tinkerbell deployments.
- ``rootpart``: a label-less template's root partition, found in the stored image's GPT.
- ``rufio``: BMC power through Rufio's Machine and Job objects (``tinkerbell.power = rufio``).
"""
