"""Warehouse schema and writer. Importing the package registers every table on the shared metadata."""

from processors.warehouse import (
    lti_tables,  # noqa: F401  (LTI tables join tables.metadata)
    ops_tables,  # noqa: F401  (ingress_answers joins tables.metadata)
)
