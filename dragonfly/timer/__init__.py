"""The deployment timer: the history of finished deployments, ETAs learned from it, the
dashboard's figures and the Prometheus metrics."""
