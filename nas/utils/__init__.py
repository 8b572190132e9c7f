"""What every layer of the package may use: the user-facing error, atomic writes, strict YAML."""
from .errors import UserError
from .atomic import atomic_write, remove_torn_writes

__all__ = ["UserError", "atomic_write", "remove_torn_writes"]
