"""ACR DLP drift responder: rules, remediation and adapters. Importing this package stays cheap."""

__version__ = "0.1.0"
