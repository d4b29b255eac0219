"""One error tree. Every message says what went wrong and what to do next."""


class GraduateError(Exception):
    """Root of every error graduate raises on purpose; the CLI prints it and exits 2."""


class FlowError(GraduateError):
    """A flow definition is invalid or cannot be found."""


class ConfigError(GraduateError):
    """A setting (flag, environment variable or pyproject) is invalid."""


class InputError(ConfigError):
    """An instance's input does not fit its flow's `[input]` (an unknown name, an
    ill-formed or repeated item)."""


class ServiceError(GraduateError):
    """A service (Temporal, a broker, a database) cannot be started or reached."""


class ServiceUnavailable(ServiceError):
    """A service answers no connection at its address: it is down, or the address is wrong."""


class InUse(GraduateError):
    """Another process holds what the command would change (a matrix it is running)."""


class EvidenceError(GraduateError):
    """A stored evidence file cannot be read: missing, damaged, or of an unknown schema."""


class EngineError(GraduateError):
    """An engine refused an operation (unknown instance, signal to a finished flow...)."""


class CannotTell(EngineError):
    """An engine cannot see whether anything still holds an instance; the message says
    why (what it could not inspect)."""


class EffectError(Exception):
    """Raised by a simulated external system; engines map it to retries and compensation."""


class TransientEffectError(EffectError):
    """The external system failed in a way worth retrying."""


class PermanentEffectError(EffectError):
    """The external system refused for good: retrying cannot help, compensate instead."""
