"""The deployment renderer's pieces (scripts/render-deploy.py is its entry point)."""


class DeployError(Exception):
    """A file (or pair of files) the deployment would fail on, and why."""

    def __init__(self, file: str, message: str):
        super().__init__(f"{file}: {message}")
