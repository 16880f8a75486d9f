"""The `rollbackd` command. Imports only the standard library until a command needs more."""
