"""The reliability and security battery (issue 7): hostile input, credentials, namespaces,
concurrency, crash consistency, faults and least privilege, against real servers."""
