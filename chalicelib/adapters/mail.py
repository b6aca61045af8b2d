"""Amazon SES: one plain-text mail to one address."""

from __future__ import annotations

from chalicelib.adapters.aws import client


def send(sender: str, to: str, subject: str, body: str) -> str:
    """Send through SES (``ses:SendEmail`` on the sender's identity); return SES's message id."""
    response = client("ses").send_email(
        Source=sender,
        Destination={"ToAddresses": [to]},
        Message={
            "Subject": {"Data": subject, "Charset": "UTF-8"},
            "Body": {"Text": {"Data": body, "Charset": "UTF-8"}},
        },
    )
    return str(response["MessageId"])
