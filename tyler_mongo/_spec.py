"""Entry-point target of the MongoDB backend. Imports no driver."""

from __future__ import annotations

from tyler_core.registry import BackendSpec

mongodb = BackendSpec(
    target="tyler_mongo.backend:MongoBackend",
    requires=("pymongo",),
    install="tyler-threadstore[mongo]",
    driver="pymongo",
)
