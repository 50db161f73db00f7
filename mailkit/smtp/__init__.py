"""SMTP: compose and send, and bulk mailing that never double-sends (filled in by the SMTP work)."""
