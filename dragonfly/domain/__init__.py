"""The domain: machines and their lifecycle table, the fleet (the store's machines mirrored in
memory), the OS catalog, naming, and the change feed the panel follows."""
