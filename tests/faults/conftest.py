"""The fault tests take minutes and start their own RabbitMQ node and PostgreSQL cluster:
they run with `make test-faults` (TESSERA_FAULT_TESTS=1), not with `make test`."""

import os

collect_ignore_glob = [] if os.environ.get("TESSERA_FAULT_TESTS") == "1" else ["test_*.py"]
