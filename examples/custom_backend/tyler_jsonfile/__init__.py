"""tyler-jsonfile: an example third-party backend for tyler-threadstore."""

from tyler_jsonfile.backend import JSONFileBackend

__all__ = ["JSONFileBackend"]
