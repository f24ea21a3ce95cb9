"""The metrics child (metrics process): bus facts as Prometheus metrics, and HTTP health.

``model`` keeps what the bus said (main thread writes, HTTP threads read, one lock);
``collector`` turns it into metric families for ``prometheus_client``; ``http`` is the bounded
HTTP server (timeouts, size and connection limits); ``main`` runs the child. Only this process
imports ``prometheus_client``: the zygote does not preload it.
"""
