"""ACR DLP drift responder: rules, remediation and adapters. Importing this package stays cheap."""

__version__ = "0.1.0"


def _protect_logs() -> None:
    """Every log line of the responder is one clean line, whoever chose the text in it (dlp/sanitize.py)."""
    from dlp.sanitize import protect_logs

    protect_logs()


_protect_logs()
