"""crm_devstack: the local platform for development and tests.

Real infrastructure without Docker: a Kafka broker run from Maven Central jars
(`kafka`), throwaway PostgreSQL clusters (`postgres`), a supervisor for named child
processes (`supervisor`) and the `make run` stack of all services (`stack`, CLI
`python -m crm_devstack run|start|stop|status|token`).
"""

from .errors import DevstackError
from .kafka import KAFKA_VERSION, KafkaBroker, ensure_kafka_jars, stop_from_pid_file
from .ports import free_port, port_in_use
from .postgres import PostgresCluster
from .supervisor import ProcessGroup, wait_http_ok

__all__ = [
    "KAFKA_VERSION",
    "DevstackError",
    "KafkaBroker",
    "PostgresCluster",
    "ProcessGroup",
    "ensure_kafka_jars",
    "free_port",
    "port_in_use",
    "stop_from_pid_file",
    "wait_http_ok",
]
