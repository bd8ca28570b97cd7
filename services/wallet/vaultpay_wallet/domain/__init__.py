"""Domain of the wallet service: pure Python, no infrastructure."""
