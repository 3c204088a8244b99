"""User-facing errors: the CLI prints their one-line message and exits with status 2."""


class UserError(Exception):
    """Bad input from the user (option, config, dataset path). Never a bug in bsnn."""


class ConfigError(UserError):
    pass


class DatasetError(UserError):
    pass
