"""Domain of the kyc service: pure Python, no infrastructure."""
