"""In-memory fakes of the platform's ports, for fast unit tests of business rules."""
