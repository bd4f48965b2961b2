"""CLI commands of this part (registered on the apps in unlearnops.cli)."""
