"""The kyc service: encrypted identity documents, duplicate detection, the review queue."""
