"""The MongoDB backend of tyler-threadstore: :class:`tyler_mongo.backend.MongoBackend`.

Registered for ``mongodb://`` and ``mongodb+srv://`` URLs (extra ``mongo``: PyMongo). This
package imports no driver: the registry reads :mod:`tyler_mongo._spec` and imports
:mod:`tyler_mongo.backend` only when a Mongo URL is used.
"""
