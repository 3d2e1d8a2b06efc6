"""The admin page (``/admin``): every node's heartbeat, the cluster's counts, recent errors."""
