"""Stage ``pii``: find e-mail addresses, IP addresses, phone, card and IBAN numbers and redact them.

The Beam-free core is ``redact.PiiRedactor``; it returns the redacted text, counts per kind and
the redactions (kind and placeholder span) the stage writes to ``pii_redactions``.
"""
