"""The workflow engine (wave 2): a deployment as an ordered list of actions, persisted in the
store and executed by the discovery agent (native), by Tinkerbell, or by the demo's simulator.

Every runner satisfies ``dragonfly.context.WorkflowRunner`` and plugs into
``AppContext.runner``.
"""
