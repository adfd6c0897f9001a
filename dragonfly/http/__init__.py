"""The HTTP framework of the appliance: declared routes, the one error edge, the generated
OpenAPI document. Endpoint modules (api/, agent/, edge/, auth/) build on it."""
